/*
 * backup: see backup.h. The copying itself is store_backup() (store.c); this file names,
 * seals (fsync, 0600, rename, fsync of the folder), lists and prunes the files, and runs the
 * periodic thread. It never reads a path from a client: names are checked against the
 * pattern and joined to the configured folder.
 */
#define _GNU_SOURCE /* timegm */
#include "backup.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NAME_PREFIX "cloud-"
#define NAME_SUFFIX ".db"
#define NAME_LEN 25 /* cloud- + YYYYmmddTHHMMSSZ + .db */

struct backup {
    store_t *st;
    char dir[PATH_MAX];
    int interval_s, keep;
    pthread_mutex_t run_mu; /* one backup at a time */
    pthread_mutex_t mu;     /* with cond and stop: the thread's wait */
    pthread_cond_t cond;
    bool stop;
    pthread_t thread;
    bool thread_started;
};

bool backup_name_valid(const char *s)
{
    static const char shape[] = "cloud-DDDDDDDDTDDDDDDZ.db"; /* D: a digit */

    if (!s || strlen(s) != NAME_LEN)
        return false;
    for (int i = 0; i < NAME_LEN; i++) {
        if (shape[i] == 'D' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

/* The time a valid name says, in ms; -1 when it is not a real date. */
static int64_t name_time(const char *s)
{
    struct tm tm = {0};
    char rest[8];

    if (sscanf(s, NAME_PREFIX "%4d%2d%2dT%2d%2d%2d%7s", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, rest) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000;
}

static int join(const backup_t *b, const char *name, char *out, size_t len)
{
    return snprintf(out, len, "%s/%s", b->dir, name) < (int)len ? 0 : -ENAMETOOLONG;
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int cmp_newest(const void *a, const void *b)
{
    /* the names sort as their times do */
    return -strcmp(((const struct backup_info *)a)->name, ((const struct backup_info *)b)->name);
}

int backup_list(backup_t *b, struct backup_info *out, int max, int *n)
{
    DIR *d;
    struct dirent *e;
    char path[PATH_MAX];
    struct stat sb;

    *n = 0;
    if (!(d = opendir(b->dir)))
        return -errno;
    while ((e = readdir(d)) && *n < max) {
        if (!backup_name_valid(e->d_name) || join(b, e->d_name, path, sizeof(path)) < 0)
            continue;
        if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        /* backup_name_valid() checked the exact length: it fits */
        memcpy(out[*n].name, e->d_name, strlen(e->d_name) + 1);
        out[*n].size = (int64_t)sb.st_size;
        out[*n].created_ms = name_time(e->d_name);
        (*n)++;
    }
    closedir(d);
    qsort(out, (size_t)*n, sizeof(*out), cmp_newest);
    return 0;
}

/* Deletes all but the newest keep. */
static void prune(backup_t *b)
{
    struct backup_info *all = calloc(BACKUP_LIST_MAX, sizeof(*all));
    char path[PATH_MAX];
    int n = 0;

    if (!all || backup_list(b, all, BACKUP_LIST_MAX, &n) < 0) {
        free(all);
        return;
    }
    for (int i = b->keep; i < n; i++) {
        if (join(b, all[i].name, path, sizeof(path)) == 0 && unlink(path) < 0)
            log_warn("backup: cannot delete %s", path);
        else
            log_info("backup: deleted %s (keeping %d)", all[i].name, b->keep);
    }
    free(all);
}

int backup_now(backup_t *b, struct backup_info *out)
{
    char name[BACKUP_NAME_MAX], tmp[PATH_MAX], path[PATH_MAX];
    struct timespec ts;
    struct tm tm;
    struct stat sb;
    int fd, rc;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(name, sizeof(name), NAME_PREFIX "%Y%m%dT%H%M%SZ" NAME_SUFFIX, &tm);
    if ((rc = join(b, name, path, sizeof(path))) < 0)
        return rc;
    if (snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", b->dir, name) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    pthread_mutex_lock(&b->run_mu);
    if (access(path, F_OK) == 0) {
        rc = -EEXIST;
        goto done;
    }
    unlink(tmp); /* left by a crash */
    /* created empty and private first: SQLite opens an empty file as an empty database */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        log_warn("backup: cannot create %s", tmp);
        goto done;
    }
    close(fd);
    if ((rc = store_backup(b->st, tmp)) < 0)
        goto fail;
    if ((rc = fsync_path(tmp, O_RDONLY)) < 0 || chmod(tmp, 0600) < 0 || rename(tmp, path) < 0) {
        rc = rc < 0 ? rc : -errno;
        log_warnx("backup: cannot seal %s: %s", path, strerror(-rc));
        goto fail;
    }
    if ((rc = fsync_path(b->dir, O_RDONLY | O_DIRECTORY)) < 0)
        log_warnx("backup: fsync %s: %s", b->dir, strerror(-rc)); /* the file is whole */
    rc = 0;
    if (stat(path, &sb) < 0) {
        rc = -errno;
        goto done;
    }
    snprintf(out->name, sizeof(out->name), "%s", name);
    out->size = (int64_t)sb.st_size;
    out->created_ms = (int64_t)ts.tv_sec * 1000;
    log_info("backup: wrote %s (%lld bytes)", path, (long long)out->size);
    prune(b);
    goto done;
fail:
    unlink(tmp);
done:
    pthread_mutex_unlock(&b->run_mu);
    return rc;
}

int backup_open(backup_t *b, const char *name, int *fd, int64_t *size)
{
    char path[PATH_MAX];
    struct stat sb;

    *fd = -1;
    if (!backup_name_valid(name) || join(b, name, path, sizeof(path)) < 0)
        return -ENOENT;
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return -errno;
    if (fstat(*fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(*fd);
        *fd = -1;
        return -ENOENT;
    }
    *size = (int64_t)sb.st_size;
    return 0;
}

static void *run(void *arg)
{
    backup_t *b = arg;
    struct backup_info info;
    struct timespec until;
    int rc;

    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += b->interval_s;
        rc = 0;
        while (!b->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&b->cond, &b->mu, &until);
        if (b->stop)
            break;
        pthread_mutex_unlock(&b->mu);
        if ((rc = backup_now(b, &info)) < 0)
            log_warnx("backup: periodic backup failed: %s", strerror(-rc));
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int backup_start(const struct cfg_backup *cfg, const char *store_path, store_t *st, backup_t **out)
{
    pthread_condattr_t ca;
    backup_t *b;
    int rc;

    *out = NULL;
    if (!(b = calloc(1, sizeof(*b))))
        return -ENOMEM;
    b->st = st;
    b->interval_s = cfg->interval_s;
    b->keep = cfg->keep;
    if (cfg->dir[0]) {
        rc = snprintf(b->dir, sizeof(b->dir), "%s", cfg->dir);
    } else {
        const char *slash = strrchr(store_path, '/');
        if (!slash)
            rc = snprintf(b->dir, sizeof(b->dir), "backups");
        else
            rc = snprintf(b->dir, sizeof(b->dir), "%.*s/backups", (int)(slash - store_path),
                          store_path);
    }
    if (rc < 0 || rc >= (int)sizeof(b->dir)) {
        free(b);
        return -ENAMETOOLONG;
    }
    if (mkdir(b->dir, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        log_warn("backup: cannot create %s", b->dir);
        free(b);
        return rc;
    }
    pthread_mutex_init(&b->run_mu, NULL);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = pthread_create(&b->thread, NULL, run, b)) != 0) {
        backup_stop(b);
        return -rc;
    }
    b->thread_started = true;
    log_info("backup: %s every %d s, keeping %d", b->dir, b->interval_s, b->keep);
    *out = b;
    return 0;
}

void backup_stop(backup_t *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    if (b->thread_started)
        pthread_join(b->thread, NULL);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->run_mu);
    free(b);
}
