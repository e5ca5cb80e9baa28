/*
 * backup: online copies of meter-cloud's store, made with SQLite's backup API (store_backup)
 * into backup.dir as "cloud-YYYYmmddTHHMMSSZ.db" (UTC): on a thread every
 * backup.interval_s, and on demand (POST /api/v1/admin/backups). Each copy is written to a
 * temporary name, fsynced, made mode 0600 and renamed, so a listed file is always whole;
 * only the newest backup.keep are kept. Restoring is a file copy with the cloud stopped.
 *
 * Errors: 0 or a negative errno. Thread-safe; one backup runs at a time.
 */
#ifndef MLK_CLOUD_BACKUP_H
#define MLK_CLOUD_BACKUP_H

#include "config.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct backup backup_t;

#define BACKUP_NAME_MAX 32   /* "cloud-20261202T151000Z.db" and its NUL fit */
#define BACKUP_LIST_MAX 1000 /* backups listed, newest first; more are ignored */

struct backup_info {
    char name[BACKUP_NAME_MAX];
    int64_t size;       /* bytes */
    int64_t created_ms; /* from the name: when the copy was started, UTC */
};

/* Creates the folder (mode 0700, one level) when missing and starts the periodic thread.
 * dir "" means "<folder of store_path>/backups". st must outlive *out. */
int backup_start(const struct cfg_backup *cfg, const char *store_path, store_t *st, backup_t **out);
/* Stops the thread, waits for a backup being made; NULL is allowed. */
void backup_stop(backup_t *b);

/* Makes one backup now and prunes to keep. -EEXIST: one of that second exists already. */
int backup_now(backup_t *b, struct backup_info *out);
/* The backups, newest first: at most max in out, *n of them. */
int backup_list(backup_t *b, struct backup_info *out, int max, int *n);
/* Opens a listed backup for reading: *fd (the caller closes it) and its size. -ENOENT when
 * name is not a backup's name or there is no such file. */
int backup_open(backup_t *b, const char *name, int *fd, int64_t *size);
/* Whether s is a backup's name, exactly the pattern above (so never a path). */
bool backup_name_valid(const char *s);

#endif
