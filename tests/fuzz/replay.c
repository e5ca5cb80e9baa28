/*
 * replay: a main() for a fuzz target without libFuzzer. Feeds every file of the target's
 * seed corpus (FUZZ_CORPUS_DIR, compiled in), then every file or folder named on the
 * command line, to LLVMFuzzerTestOneInput(), each in a buffer of exactly its size so that
 * ASan sees any read past the end. Exits 0 when every input ran; a failing check aborts.
 *
 *   replay_wire                        the seed corpus only (what ctest runs)
 *   replay_wire tests/fuzz/crashes/x   the seed corpus, then x
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FUZZ_CORPUS_DIR
#error "FUZZ_CORPUS_DIR must name the seed corpus folder"
#endif

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    int rc = -1;

    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: %s: cannot seek\n", path);
        goto out;
    }
    /* malloc(0) may return NULL; one spare byte that the target is not told about */
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "replay: %s: cannot read\n", path);
        goto out;
    }
    printf("replay: %s (%ld bytes)\n", path, n);
    fflush(stdout);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs path, or every regular file in it (name order, no dot files) when it is a folder.
 * Returns the number of inputs run, or -1. */
static int run_path(const char *path)
{
    struct stat st;
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int count = 0;
    DIR *d;

    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path) < 0 ? -1 : 1;
    if (!(d = opendir(path))) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap ? cap * 2 : 64) * sizeof(*names));
            if (!nn)
                goto fail;
            names = nn;
            cap = cap ? cap * 2 : 64;
        }
        if (!(names[n] = strdup(de->d_name)))
            goto fail;
        n++;
    }
    closedir(d);
    d = NULL;
    if (n > 1)
        qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n; i++) {
        char file[4096];
        snprintf(file, sizeof(file), "%s/%s", path, names[i]);
        if (stat(file, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (run_file(file) < 0)
            goto fail;
        count++;
    }
    goto out;
fail:
    count = -1;
out:
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    int total, n;

    total = run_path(FUZZ_CORPUS_DIR);
    if (total < 0)
        return 1;
    if (total == 0) {
        fprintf(stderr, "replay: %s: the seed corpus is empty\n", FUZZ_CORPUS_DIR);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if ((n = run_path(argv[i])) < 0)
            return 1;
        total += n;
    }
    printf("replay: %d inputs, all checks passed\n", total);
    return 0;
}
