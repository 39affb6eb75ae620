/*
 * at_store_dir.c: the directory backend.
 *
 * How a set (chain + key + meta, or account + key, or order + key) is
 * switched as a whole: each version is a directory of its own,
 *
 *     certs/.sets/<id>/<version>/{chain.pem,key.pem,meta.json}
 *
 * and the name people and readers use, certs/<id>, is a symbolic link to
 * ".sets/<id>/<version>". A writer fills and fsyncs a new version directory
 * that nobody can see yet, then points a new link at it and renames that
 * link over certs/<id>: rename(2) replaces the link atomically, so at every
 * instant certs/<id> leads to one complete version — the old or the new —
 * and a crash at any moment leaves at worst an unreferenced half-written
 * version directory under .sets, which the next writer removes. Only then is
 * the old version moved to the archive.
 *
 * A reader opens certs/<id> once as a directory and reads the files
 * relative to that descriptor, so even if a writer switches the link (or
 * archives the version) in the middle, the reader still gets one version.
 *
 * Writers of the same set serialise on an flock()ed file in locks/, which
 * also makes it safe for them to delete whatever under .sets/<id> is not
 * the current version: with the lock held it can only be a crash's debris.
 *
 * Single-file records (renewal state) are written to a temporary file in
 * the same directory, fsynced and renamed over the old one.
 */
#include "at_store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIR_MODE       0700
#define SECRET_MODE    0600
#define PUBLIC_MODE    0644
#define LOCK_MODE      0644
#define SETS           ".sets"
#define SET_LOCK_WAIT_MS 10000L
#define STALE_TEMP_SECONDS 3600
#define MAX_COLLISIONS 1000

typedef struct dir_store {
    at_store base;
    char    *root;
    /* Running as root in a store that belongs to the server's user (the
     * tool run by an administrator, Apache's parent): everything we create
     * is handed to that user, or the server could no longer replace it. */
    int      fix_owner;
    uid_t    uid;
    gid_t    gid;
} dir_store;

typedef struct dir_lock {
    at_store_lock base;
    int           fd;
} dir_lock;

static const char *const kind_dir[AT_SET_NKINDS] = { "certs", "accounts", "staging" };
/* Where replaced versions go; NULL: they are dropped. */
static const char *const kind_archive[AT_SET_NKINDS] = { "archive", "archive/.accounts", NULL };

static unsigned long name_counter;

/* ----------------------------------------------------------------- paths */

static int pathf(char *out, size_t sz, at_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int pathf(char *out, size_t sz, at_error *err, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, sz, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sz)
        return at_error_set(err, AT_ERR_IO, "path too long under the store directory: %.200s...", out);
    return 0;
}

/* A name unique among this store's writers: time, process, counter. */
static void unique_name(char *out, size_t sz)
{
    unsigned long n = __atomic_add_fetch(&name_counter, 1, __ATOMIC_RELAXED);
    struct tm tm;
    time_t now = time(NULL);
    char ts[32];

    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(out, sz, "%s-%ld-%lu", ts, (long)getpid(), n);
}

static void utc_stamp(char *out, size_t sz)
{
    struct tm tm;
    time_t now = time(NULL);

    gmtime_r(&now, &tm);
    strftime(out, sz, "%Y%m%dT%H%M%SZ", &tm);
}

/* base + suffix, or base + suffix + "-N" if that is taken. */
static int free_name(char *out, size_t sz, const char *base, const char *suffix, at_error *err)
{
    struct stat sb;

    for (int i = 1; i <= MAX_COLLISIONS; i++) {
        int rc = i == 1 ? pathf(out, sz, err, "%s%s", base, suffix)
                        : pathf(out, sz, err, "%s%s-%d", base, suffix, i);
        if (rc != 0)
            return -1;
        if (lstat(out, &sb) != 0 && errno == ENOENT)
            return 0;
    }
    return at_error_set(err, AT_ERR_IO, "cannot find a free name for %s%s", base, suffix);
}

/* ------------------------------------------------------ file primitives */

static void own_path(const dir_store *ds, const char *path)
{
    if (ds && ds->fix_owner && lchown(path, ds->uid, ds->gid) != 0) {
        /* The write itself succeeded; a later chown of the store repairs this. */
    }
}

static void own_fd(const dir_store *ds, int fd)
{
    if (ds && ds->fix_owner && fchown(fd, ds->uid, ds->gid) != 0) {
        /* as above */
    }
}

static int fsync_dir(const char *path, at_error *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return at_error_set(err, AT_ERR_IO, "cannot open directory %s: %s", path, strerror(errno));
    /* Some file systems cannot sync a directory; the rename is still atomic. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
        rc = at_error_set(err, AT_ERR_IO, "cannot sync directory %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}

static int fsync_parent(const char *path, at_error *err)
{
    char parent[4096];
    char *slash;

    if (pathf(parent, sizeof(parent), err, "%s", path) != 0)
        return -1;
    slash = strrchr(parent, '/');
    if (!slash)
        return fsync_dir(".", err);
    if (slash == parent)
        slash[1] = '\0';
    else
        *slash = '\0';
    return fsync_dir(parent, err);
}

/* Create a directory 0700 (exactly, whatever the umask) if missing. */
static int ensure_dir(const dir_store *ds, const char *path, at_error *err)
{
    struct stat sb;

    if (mkdir(path, DIR_MODE) == 0) {
        if (chmod(path, DIR_MODE) != 0)
            return at_error_set(err, AT_ERR_IO, "cannot set mode 0700 on %s: %s", path, strerror(errno));
        own_path(ds, path);
        return fsync_parent(path, err);
    }
    if (errno != EEXIST)
        return at_error_set(err, AT_ERR_IO, "cannot create directory %s: %s%s", path, strerror(errno),
                            errno == EACCES ? " (the server's user needs write access to the store)" : "");
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return at_error_set(err, AT_ERR_IO, "%s exists but is not a directory; move it out of the way",
                            path);
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A new file with exactly `mode`, its contents on disk before we return. */
static int write_new_file(const dir_store *ds, const char *path, const char *data, size_t len, mode_t mode,
                          at_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    int saved;

    if (fd < 0)
        return at_error_set(err, AT_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    own_fd(ds, fd);
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        saved = errno;
        close(fd);
        unlink(path);
        return at_error_set(err, AT_ERR_IO, "cannot write %s: %s%s", path, strerror(saved),
                            saved == ENOSPC ? " (the disk is full)" : "");
    }
    if (close(fd) != 0) {
        saved = errno;
        unlink(path);
        return at_error_set(err, AT_ERR_IO, "cannot write %s: %s", path, strerror(saved));
    }
    return 0;
}

/* Read up to AT_STORE_MAX_FILE + 1 bytes (more is damage; the caller says so). */
static int read_fd(int fd, at_buf *out, const char *path, at_error *err)
{
    char chunk[8192];

    if (at_buf_reserve(out, 0) != 0)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    while (out->len <= AT_STORE_MAX_FILE) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return at_error_set(err, AT_ERR_IO, "cannot read %s: %s", path, strerror(errno));
        if (n == 0)
            break;
        if (at_buf_append(out, chunk, (size_t)n) != 0)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    return 0;
}

/* Remove a version directory (files only; one level). Debris, not records. */
static void remove_flat_dir(int parent, const char *name)
{
    int dfd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d;
    struct dirent *e;

    if (dfd < 0)
        return;
    if (!(d = fdopendir(dfd))) {
        close(dfd);
        return;
    }
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unlinkat(dfd, e->d_name, 0);
    }
    closedir(d);
    unlinkat(parent, name, AT_REMOVEDIR);
}

/* ----------------------------------------------------------------- locks */

static int lock_file(dir_store *ds, const char *name, int *fdp, at_error *err)
{
    char path[4096];
    int fd;

    if (pathf(path, sizeof(path), err, "%s/locks/%s.lock", ds->root, name) != 0)
        return -1;
    /* Readable by all: flock works on a read-only descriptor, so a lock
     * file someone else created never locks us out. It holds only a pid. */
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, LOCK_MODE);
    if (fd < 0 && errno == EACCES)
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return at_error_set(err, AT_ERR_IO, "cannot open lock file %s: %s", path, strerror(errno));
    own_fd(ds, fd);
    *fdp = fd;
    return 0;
}

/* Writers of one set take turns; the wait is bounded (a writer holds it for
 * a few fsyncs), and a dead writer's lock vanishes with its process. */
static int set_lock(dir_store *ds, at_set_kind kind, const char *id, int *fdp, at_error *err)
{
    char name[512];
    struct timespec pause = { 0, 10 * 1000000L };
    long waited = 0;
    int fd;

    snprintf(name, sizeof(name), ".set-%s-%s", kind_dir[kind], id);
    if (lock_file(ds, name, &fd, err) != 0)
        return -1;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK || waited >= SET_LOCK_WAIT_MS) {
            close(fd);
            return at_error_set(err, AT_ERR_BUSY, "%s/%s/%s is being written by another process for "
                                "more than %ld s", ds->root, kind_dir[kind], id, SET_LOCK_WAIT_MS / 1000);
        }
        nanosleep(&pause, NULL);
        waited += 10;
    }
    *fdp = fd;
    return 0;
}

static void set_unlock(int fd)
{
    close(fd);    /* releases the flock */
}

static void dir_unlock(at_store_lock *lk)
{
    dir_lock *l = (dir_lock *)lk;
    close(l->fd);
    free(l);
}

static int dir_trylock(at_store *st, const char *name, at_store_lock **lkp, at_error *err)
{
    dir_store *ds = (dir_store *)st;
    dir_lock *l;
    char pid[32];
    int fd;
    ssize_t n;

    if (lock_file(ds, name, &fd, err) != 0)
        return -1;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK) {
            n = pread(fd, pid, sizeof(pid) - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
            close(fd);
            return at_error_set(err, AT_ERR_BUSY, "%s is locked by %s%s (another renewal of it is "
                                "running)", name, pid[0] ? "process " : "another process", pid);
        }
        close(fd);
        return at_error_set(err, AT_ERR_IO, "cannot lock %s/locks/%s.lock: %s", ds->root, name,
                            strerror(errno));
    }
    /* Who holds it, for the message another process will show. */
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* Only the message suffers. */
    }
    l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    l->base.release = dir_unlock;
    l->fd = fd;
    *lkp = &l->base;
    return 0;
}

/* -------------------------------------------------------------- versions */

enum { CUR_LINK = 0, CUR_ABSENT = 1, CUR_ENTRY = 2 };

/* What certs/<id> is: a link to one of our versions (CUR_LINK, version
 * set), absent, or something else (CUR_ENTRY: a real directory or a link
 * somewhere else, e.g. files an administrator put there by hand). */
static int current_version(dir_store *ds, at_set_kind kind, const char *id, char *version,
                           size_t vsz, at_error *err)
{
    char link[4096], target[4096], prefix[512];
    ssize_t n;
    size_t pl;

    version[0] = '\0';
    if (pathf(link, sizeof(link), err, "%s/%s/%s", ds->root, kind_dir[kind], id) != 0)
        return -1;
    n = readlink(link, target, sizeof(target) - 1);
    if (n < 0) {
        if (errno == ENOENT)
            return CUR_ABSENT;
        if (errno == EINVAL)
            return CUR_ENTRY;
        return at_error_set(err, AT_ERR_IO, "cannot read %s: %s", link, strerror(errno));
    }
    target[n] = '\0';
    pl = (size_t)snprintf(prefix, sizeof(prefix), "%s/%s/", SETS, id);
    if (strncmp(target, prefix, pl) != 0 || !target[pl] || strchr(target + pl, '/') ||
        strlen(target + pl) >= vsz)
        return CUR_ENTRY;
    snprintf(version, vsz, "%s", target + pl);
    return CUR_LINK;
}

/* With the set lock held: everything under .sets/<id> but `keep` is debris
 * of a writer that died (or versions this kind does not archive). */
static void sets_cleanup(dir_store *ds, at_set_kind kind, const char *id, const char *keep)
{
    char path[4096];
    DIR *d;
    struct dirent *e;
    int dfd;

    if (pathf(path, sizeof(path), NULL, "%s/%s/%s/%s", ds->root, kind_dir[kind], SETS, id) != 0)
        return;
    dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return;
    if (!(d = fdopendir(dfd))) {
        close(dfd);
        return;
    }
    while ((e = readdir(d))) {
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            (keep && strcmp(e->d_name, keep) == 0))
            continue;
        if (fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(sb.st_mode))
            remove_flat_dir(dfd, e->d_name);
        else
            unlinkat(dfd, e->d_name, 0);
    }
    closedir(d);
}

/* A free archive/<id>/<UTC> (or archive/.accounts/<id>/<UTC>) name. */
static int archive_dest(dir_store *ds, at_set_kind kind, const char *id, char *dest, size_t sz,
                        at_error *err)
{
    char dir[4096], base[4096], ts[32];

    if (pathf(dir, sizeof(dir), err, "%s/%s", ds->root, kind_archive[kind]) != 0 ||
        ensure_dir(ds, dir, err) != 0 ||
        pathf(dir, sizeof(dir), err, "%s/%s/%s", ds->root, kind_archive[kind], id) != 0 ||
        ensure_dir(ds, dir, err) != 0)
        return -1;
    utc_stamp(ts, sizeof(ts));
    if (pathf(base, sizeof(base), err, "%s/%s", dir, ts) != 0)
        return -1;
    return free_name(dest, sz, base, "", err);
}

/* Move the replaced or retired version (or a hand-made entry) out of the way. */
static int retire_entry(dir_store *ds, at_set_kind kind, const char *id, const char *src, at_error *err)
{
    char dest[4096];

    if (!kind_archive[kind]) {
        /* Not archived: park it under .sets/<id> where cleanup removes it. */
        char tmp[128];
        unique_name(tmp, sizeof(tmp));
        if (pathf(dest, sizeof(dest), err, "%s/%s/%s/%s/old-%s", ds->root, kind_dir[kind], SETS, id,
                  tmp) != 0)
            return -1;
    } else if (archive_dest(ds, kind, id, dest, sizeof(dest), err) != 0) {
        return -1;
    }
    if (rename(src, dest) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot move %s to %s: %s", src, dest, strerror(errno));
    if (fsync_parent(dest, err) != 0 || fsync_parent(src, err) != 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- sets */

static int dir_set_read(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                        size_t n, at_buf *out, char version[AT_STORE_VERSION_MAX],
                        char where[AT_STORE_WHERE_MAX], at_error *err)
{
    dir_store *ds = (dir_store *)st;
    char dir[4096], path[4096], again[AT_STORE_VERSION_MAX];

    if (pathf(where, AT_STORE_WHERE_MAX, err, "%s/%s/%s", ds->root, kind_dir[kind], id) != 0)
        return -1;
    for (int attempt = 0; attempt < 4; attempt++) {
        int cur = current_version(ds, kind, id, version, AT_STORE_VERSION_MAX, err), dfd, missing = 0;

        if (cur < 0)
            return -1;
        if (cur == CUR_ABSENT)
            return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist", where);
        if (cur == CUR_LINK ? pathf(dir, sizeof(dir), err, "%s/%s/%s/%s/%s", ds->root, kind_dir[kind],
                                    SETS, id, version) != 0
                            : pathf(dir, sizeof(dir), err, "%s", where) != 0)
            return -1;
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            if (errno == ENOENT || errno == ENOTDIR)
                continue;            /* switched under us, or a dangling link */
            return at_error_set(err, AT_ERR_IO, "cannot open %s: %s", where, strerror(errno));
        }
        for (size_t i = 0; i < n; i++) {
            int fd;
            at_buf_free_secret(&out[i]);
            fd = openat(dfd, files[i].name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                if (errno == ENOENT) {
                    missing++;
                    continue;
                }
                pathf(path, sizeof(path), NULL, "%s/%s", where, files[i].name);
                close(dfd);
                return at_error_set(err, AT_ERR_IO, "cannot open %s: %s", path, strerror(errno));
            }
            pathf(path, sizeof(path), NULL, "%s/%s", where, files[i].name);
            if (read_fd(fd, &out[i], path, err) != 0) {
                close(fd);
                close(dfd);
                return -1;
            }
            close(fd);
        }
        close(dfd);
        /* A file missing from a version that is still current is damage
         * (the caller decides); from one that was just replaced, a race. */
        if (missing && (current_version(ds, kind, id, again, sizeof(again), err) != cur ||
                        strcmp(again, version) != 0))
            continue;
        return 0;
    }
    return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist (it points nowhere)", where);
}

static int write_version(dir_store *ds, const char *vdir, const at_store_file *files, size_t n,
                         at_error *err)
{
    char path[4096];

    if (mkdir(vdir, DIR_MODE) != 0 || chmod(vdir, DIR_MODE) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot create directory %s: %s", vdir, strerror(errno));
    own_path(ds, vdir);
    for (size_t i = 0; i < n; i++) {
        if (!files[i].data)
            continue;
        if (pathf(path, sizeof(path), err, "%s/%s", vdir, files[i].name) != 0 ||
            write_new_file(ds, path, files[i].data, files[i].len,
                           files[i].secret ? SECRET_MODE : PUBLIC_MODE, err) != 0)
            return -1;
    }
    /* The files' names, then the version's own name, reach the disk before
     * any link can point at them. */
    if (fsync_dir(vdir, err) != 0 || fsync_parent(vdir, err) != 0)
        return -1;
    return 0;
}

static int switch_link(dir_store *ds, at_set_kind kind, const char *id, const char *version,
                       at_error *err)
{
    char tmp[4096], link[4096], target[1024], name[128];

    unique_name(name, sizeof(name));
    if (pathf(tmp, sizeof(tmp), err, "%s/%s/%s/%s/.lnk-%s", ds->root, kind_dir[kind], SETS, id, name) != 0 ||
        pathf(link, sizeof(link), err, "%s/%s/%s", ds->root, kind_dir[kind], id) != 0 ||
        pathf(target, sizeof(target), err, "%s/%s/%s", SETS, id, version) != 0)
        return -1;
    if (symlink(target, tmp) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot create link %s: %s", tmp, strerror(errno));
    own_path(ds, tmp);
    if (rename(tmp, link) != 0) {
        int saved = errno;
        unlink(tmp);
        return at_error_set(err, AT_ERR_IO, "cannot switch %s to the new version: %s", link,
                            strerror(saved));
    }
    return fsync_parent(link, err);
}

static int set_write_locked(dir_store *ds, at_set_kind kind, const char *id, const at_store_file *files,
                            size_t n, at_error *err)
{
    char sets[4096], vdir[4096], old[AT_STORE_VERSION_MAX], entry[4096], src[4096], version[128];
    int cur;

    if (pathf(sets, sizeof(sets), err, "%s/%s/%s", ds->root, kind_dir[kind], SETS) != 0 ||
        ensure_dir(ds, sets, err) != 0 ||
        pathf(sets, sizeof(sets), err, "%s/%s/%s/%s", ds->root, kind_dir[kind], SETS, id) != 0 ||
        ensure_dir(ds, sets, err) != 0)
        return -1;
    if ((cur = current_version(ds, kind, id, old, sizeof(old), err)) < 0)
        return -1;
    sets_cleanup(ds, kind, id, cur == CUR_LINK ? old : NULL);

    unique_name(version, sizeof(version));
    if (pathf(vdir, sizeof(vdir), err, "%s/%s", sets, version) != 0)
        return -1;
    if (write_version(ds, vdir, files, n, err) != 0) {
        remove_flat_dir(AT_FDCWD, vdir);
        return -1;
    }
    /* Something not made by us sits at the name: a directory cannot be
     * replaced by a link atomically, so archive it first. */
    if (cur == CUR_ENTRY) {
        if (pathf(entry, sizeof(entry), err, "%s/%s/%s", ds->root, kind_dir[kind], id) != 0 ||
            retire_entry(ds, kind, id, entry, err) != 0) {
            remove_flat_dir(AT_FDCWD, vdir);
            return -1;
        }
    }
    if (switch_link(ds, kind, id, version, err) != 0) {
        remove_flat_dir(AT_FDCWD, vdir);
        return -1;
    }
    /* The new version is live; from here on a failure only leaves the old
     * one where cleanup or the next writer finds it. */
    if (cur == CUR_LINK && kind_archive[kind]) {
        at_error lerr = AT_ERROR_INIT;
        if (pathf(src, sizeof(src), &lerr, "%s/%s", sets, old) == 0)
            retire_entry(ds, kind, id, src, &lerr);
        at_error_clear(&lerr);
    }
    sets_cleanup(ds, kind, id, version);
    return 0;
}

static int dir_set_write(at_store *st, at_set_kind kind, const char *id, const at_store_file *files,
                         size_t n, at_error *err)
{
    dir_store *ds = (dir_store *)st;
    int lk, rc;

    if (set_lock(ds, kind, id, &lk, err) != 0)
        return -1;
    rc = set_write_locked(ds, kind, id, files, n, err);
    set_unlock(lk);
    return rc;
}

static int set_remove_locked(dir_store *ds, at_set_kind kind, const char *id, at_error *err)
{
    char link[4096], src[4096], cur_v[AT_STORE_VERSION_MAX];
    int cur = current_version(ds, kind, id, cur_v, sizeof(cur_v), err);

    if (cur < 0)
        return -1;
    if (pathf(link, sizeof(link), err, "%s/%s/%s", ds->root, kind_dir[kind], id) != 0)
        return -1;
    if (cur == CUR_ABSENT)
        return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist", link);
    if (cur == CUR_ENTRY)
        return retire_entry(ds, kind, id, link, err);
    /* Archive first, then drop the name: a crash in between leaves a
     * dangling name, which reads as absent, never a half set. */
    if (kind_archive[kind]) {
        if (pathf(src, sizeof(src), err, "%s/%s/%s/%s/%s", ds->root, kind_dir[kind], SETS, id, cur_v) != 0)
            return -1;
        if (retire_entry(ds, kind, id, src, err) != 0)
            return -1;
    }
    if (unlink(link) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot remove %s: %s", link, strerror(errno));
    if (fsync_parent(link, err) != 0)
        return -1;
    sets_cleanup(ds, kind, id, NULL);
    if (pathf(src, sizeof(src), NULL, "%s/%s/%s/%s", ds->root, kind_dir[kind], SETS, id) == 0)
        rmdir(src);
    return 0;
}

static int dir_set_remove(at_store *st, at_set_kind kind, const char *id, at_error *err)
{
    dir_store *ds = (dir_store *)st;
    int lk, rc;

    if (set_lock(ds, kind, id, &lk, err) != 0)
        return -1;
    rc = set_remove_locked(ds, kind, id, err);
    set_unlock(lk);
    return rc;
}

static int quarantine_locked(dir_store *ds, at_set_kind kind, const char *id, const char *version,
                             char moved[AT_STORE_WHERE_MAX], at_error *err)
{
    char link[4096], src[4096], base[4096], suffix[64], ts[32], cur_v[AT_STORE_VERSION_MAX];
    int cur = current_version(ds, kind, id, cur_v, sizeof(cur_v), err);

    if (cur < 0)
        return -1;
    /* Only the very version that was found damaged is moved. */
    if (version[0] ? (cur != CUR_LINK || strcmp(cur_v, version) != 0) : cur != CUR_ENTRY)
        return 1;
    if (pathf(link, sizeof(link), err, "%s/%s/%s", ds->root, kind_dir[kind], id) != 0 ||
        (version[0] ? pathf(src, sizeof(src), err, "%s/%s/%s/%s/%s", ds->root, kind_dir[kind], SETS, id,
                            version)
                    : pathf(src, sizeof(src), err, "%s", link)) != 0)
        return -1;
    utc_stamp(ts, sizeof(ts));
    snprintf(suffix, sizeof(suffix), ".corrupt-%s", ts);
    if (pathf(base, sizeof(base), err, "%s", link) != 0 ||
        free_name(moved, AT_STORE_WHERE_MAX, base, suffix, err) != 0)
        return -1;
    if (rename(src, moved) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot move %s to %s: %s", src, moved, strerror(errno));
    if (version[0] && unlink(link) != 0 && errno != ENOENT)
        return at_error_set(err, AT_ERR_IO, "cannot remove %s: %s", link, strerror(errno));
    if (fsync_parent(link, err) != 0 || (version[0] && fsync_parent(src, err) != 0))
        return -1;
    return 0;
}

static int dir_set_quarantine(at_store *st, at_set_kind kind, const char *id, const char *version,
                              char moved[AT_STORE_WHERE_MAX], at_error *err)
{
    dir_store *ds = (dir_store *)st;
    int lk, rc;

    if (set_lock(ds, kind, id, &lk, err) != 0)
        return -1;
    rc = quarantine_locked(ds, kind, id, version, moved, err);
    set_unlock(lk);
    return rc;
}

static int list_push(char ***ids, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        char **nv = realloc(*ids, nc * sizeof(*nv));
        if (!nv)
            return -1;
        *ids = nv;
        *cap = nc;
    }
    if (!((*ids)[*n] = strdup(name)))
        return -1;
    (*n)++;
    return 0;
}

static int dir_set_list(at_store *st, at_set_kind kind, char ***ids, size_t *n, at_error *err)
{
    dir_store *ds = (dir_store *)st;
    char path[4096];
    size_t cap = 0;
    DIR *d;
    struct dirent *e;
    int dfd;

    if (pathf(path, sizeof(path), err, "%s/%s", ds->root, kind_dir[kind]) != 0)
        return -1;
    dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        if (dfd >= 0)
            close(dfd);
        return at_error_set(err, AT_ERR_IO, "cannot list %s: %s", path, strerror(errno));
    }
    while ((e = readdir(d))) {
        struct stat sb;
        /* Dot names are the store's own (versions, temporaries); moved-aside
         * sets are not records; a dangling name reads as absent. */
        if (e->d_name[0] == '.' || strstr(e->d_name, ".corrupt-") ||
            fstatat(dfd, e->d_name, &sb, 0) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        if (list_push(ids, n, &cap, e->d_name) != 0) {
            closedir(d);
            at_store_free_list(*ids, *n);
            *ids = NULL;
            *n = 0;
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        }
    }
    closedir(d);
    return 0;
}

/* ---------------------------------------------------------------- blobs */

static int blob_path(dir_store *ds, const char *id, char *out, size_t sz, at_error *err)
{
    return pathf(out, sz, err, "%s/state/%s.json", ds->root, id);
}

static int dir_blob_read(at_store *st, const char *id, at_buf *out, char where[AT_STORE_WHERE_MAX],
                         at_error *err)
{
    dir_store *ds = (dir_store *)st;
    int fd, rc;

    if (blob_path(ds, id, where, AT_STORE_WHERE_MAX, err) != 0)
        return -1;
    fd = open(where, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return at_error_set(err, AT_ERR_NOTFOUND, "%s does not exist", where);
        return at_error_set(err, AT_ERR_IO, "cannot open %s: %s", where, strerror(errno));
    }
    rc = read_fd(fd, out, where, err);
    close(fd);
    return rc;
}

static int dir_blob_write(at_store *st, const char *id, const char *data, size_t len, at_error *err)
{
    dir_store *ds = (dir_store *)st;
    char path[4096], tmp[4096], name[128];

    unique_name(name, sizeof(name));
    if (blob_path(ds, id, path, sizeof(path), err) != 0 ||
        pathf(tmp, sizeof(tmp), err, "%s/state/.tmp-%s-%s", ds->root, id, name) != 0)
        return -1;
    if (write_new_file(ds, tmp, data, len, PUBLIC_MODE, err) != 0)
        return -1;
    if (rename(tmp, path) != 0) {
        int saved = errno;
        unlink(tmp);
        return at_error_set(err, AT_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
    }
    return fsync_parent(path, err);
}

static int dir_blob_quarantine(at_store *st, const char *id, char moved[AT_STORE_WHERE_MAX], at_error *err)
{
    dir_store *ds = (dir_store *)st;
    char path[4096], suffix[64], ts[32];

    if (blob_path(ds, id, path, sizeof(path), err) != 0)
        return -1;
    utc_stamp(ts, sizeof(ts));
    snprintf(suffix, sizeof(suffix), ".corrupt-%s", ts);
    if (free_name(moved, AT_STORE_WHERE_MAX, path, suffix, err) != 0)
        return -1;
    if (rename(path, moved) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot move %s to %s: %s", path, moved, strerror(errno));
    return fsync_parent(path, err);
}

/* Temporaries of a writer that died long ago. */
static void sweep_state_temps(dir_store *ds)
{
    char path[4096];
    time_t now = time(NULL);
    DIR *d;
    struct dirent *e;
    int dfd;

    if (pathf(path, sizeof(path), NULL, "%s/state", ds->root) != 0)
        return;
    if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return;
    if (!(d = fdopendir(dfd))) {
        close(dfd);
        return;
    }
    while ((e = readdir(d))) {
        struct stat sb;
        if (strncmp(e->d_name, ".tmp-", 5) != 0 ||
            fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode) ||
            now - sb.st_mtime < STALE_TEMP_SECONDS)
            continue;
        unlinkat(dfd, e->d_name, 0);
    }
    closedir(d);
}

/* ---------------------------------------------------------------- chown */

static int chown_tree(int parent, const char *name, const char *path, uid_t uid, gid_t gid, int depth,
                      at_error *err)
{
    struct stat sb;
    char sub[4096];
    DIR *d;
    struct dirent *e;
    int dfd, rc = 0;

    if (fchownat(parent, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
        return at_error_set(err, AT_ERR_IO, "cannot give %s to uid %ld gid %ld: %s", path, (long)uid,
                            (long)gid, strerror(errno));
    if (fstatat(parent, name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode))
        return 0;
    if (depth > 16)
        return at_error_set(err, AT_ERR_IO, "%s: directories nested too deeply", path);
    dfd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        if (dfd >= 0)
            close(dfd);
        return at_error_set(err, AT_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        rc = chown_tree(dfd, e->d_name, sub, uid, gid, depth + 1, err);
    }
    closedir(d);
    return rc;
}

static void owner_policy(dir_store *ds, uid_t uid, gid_t gid)
{
    ds->uid = uid;
    ds->gid = gid;
    ds->fix_owner = geteuid() == 0 && uid != 0;
}

static int dir_chown(at_store *st, uid_t uid, gid_t gid, at_error *err)
{
    dir_store *ds = (dir_store *)st;
    if (chown_tree(AT_FDCWD, ds->root, ds->root, uid, gid, 0, err) != 0)
        return -1;
    owner_policy(ds, uid, gid);
    return 0;
}

/* ------------------------------------------------------------ open/close */

static void dir_close(at_store *st)
{
    dir_store *ds = (dir_store *)st;
    free(ds->root);
    free(ds->base.describe);
    free(ds);
}

static const at_store_ops dir_ops = {
    .close = dir_close,
    .chown = dir_chown,
    .set_read = dir_set_read,
    .set_write = dir_set_write,
    .set_remove = dir_set_remove,
    .set_quarantine = dir_set_quarantine,
    .set_list = dir_set_list,
    .blob_read = dir_blob_read,
    .blob_write = dir_blob_write,
    .blob_quarantine = dir_blob_quarantine,
    .trylock = dir_trylock,
};

/* mkdir -p: missing parents as 0755 (they are not ours), the store 0700. */
static int make_root(const char *root, at_error *err)
{
    char path[4096];
    struct stat sb;

    if (stat(root, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return at_error_set(err, AT_ERR_CONFIG, "store %s exists but is not a directory", root);
        return 0;
    }
    if (pathf(path, sizeof(path), err, "%s", root) != 0)
        return -1;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return at_error_set(err, AT_ERR_IO, "cannot create %s for the store %s: %s", path, root,
                                strerror(errno));
        *p = '/';
    }
    return ensure_dir(NULL, root, err);
}

at_store *at_store_dir_new(const char *path, at_error *err)
{
    static const char *const subdirs[] = { "certs", "accounts", "staging", "state", "archive", "locks" };
    char sub[4096];
    dir_store *ds = calloc(1, sizeof(*ds));
    size_t len;

    if (!ds || !(ds->root = strdup(path))) {
        free(ds);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    len = strlen(ds->root);
    while (len > 1 && ds->root[len - 1] == '/')
        ds->root[--len] = '\0';
    ds->base.ops = &dir_ops;
    ds->base.path = ds->root;
    if (asprintf(&ds->base.describe, "directory %s", ds->root) < 0) {
        ds->base.describe = NULL;
        dir_close(&ds->base);
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (make_root(ds->root, err) != 0)
        goto fail;
    {
        struct stat sb;
        if (stat(ds->root, &sb) == 0)
            owner_policy(ds, sb.st_uid, sb.st_gid);
    }
    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++)
        if (pathf(sub, sizeof(sub), err, "%s/%s", ds->root, subdirs[i]) != 0 || ensure_dir(ds, sub, err) != 0)
            goto fail;
    sweep_state_temps(ds);
    return &ds->base;
fail:
    at_error_prefix(err, "opening the store");
    dir_close(&ds->base);
    return NULL;
}
