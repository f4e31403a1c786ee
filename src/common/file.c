#include "common/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int tm2__fail(int code, char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int mkdir_one(const char *dir, mode_t mode, char *why, size_t why_len)
{
    if (mkdir(dir, mode) == 0)
        return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    return tm2__fail(TM2_EIO, why, why_len, "cannot create directory %s: %s", dir,
                     strerror(e == EEXIST ? ENOTDIR : e));
}

int tm2__mkdir_parents(const char *path, mode_t last_mode, char *why, size_t why_len)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof dir)
        return tm2__fail(TM2_EIO, why, why_len, "path too long: %s", path);
    memcpy(dir, path, n + 1);
    char *last = strrchr(dir, '/');
    if (!last || last == dir)
        return 0;
    *last = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/')
            continue;
        *p = '\0';
        int r = mkdir_one(dir, 0755, why, why_len);
        *p = '/';
        if (r < 0)
            return r;
    }
    return mkdir_one(dir, last_mode, why, why_len);
}

int tm2__file_read(const char *path, size_t max, char **buf, size_t *len, int *os_err)
{
    *buf = NULL;
    *len = 0;
    *os_err = 0;
    /* O_NONBLOCK: a FIFO at path must not hang us; it fails the check below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        *os_err = errno;
        return errno == ENOENT ? TM2_ENOTFOUND : TM2_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *os_err = EINVAL;
        return TM2_EIO;
    }
    /* One byte over the limit is enough to know the file is too big. */
    char *b = malloc(max + 2);
    if (!b) {
        close(fd);
        return TM2_ENOMEM;
    }
    size_t n = 0;
    int r = 0;
    while (n <= max) {
        ssize_t got = read(fd, b + n, max + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            *os_err = errno;
            r = TM2_EIO;
            break;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (r == 0 && n > max)
        r = TM2_ETOOBIG;
    if (r < 0) {
        sodium_memzero(b, n);
        free(b);
        return r;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
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

static int sync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

/* Publishes tmp at path. Without overwrite, an existing path wins: rename
 * with RENAME_NOREPLACE, or link() where the file system lacks it. */
static int publish(const char *tmp, const char *path, bool overwrite)
{
    if (overwrite)
        return rename(tmp, path);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return -1;
    if (link(tmp, path) < 0)
        return -1;
    unlink(tmp);
    return 0;
}

/* Creates "<path>.tmp-<12 random characters>" for writing, exclusively.
 * Not mkostemp: its open happens inside libc, unseen by ThreadSanitizer,
 * which then takes this thread's writes to the new descriptor for races
 * with whichever thread last held the same number. */
static int create_tmp(const char *path, char *tmp, size_t cap)
{
    static const char abc[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int tries = 0; tries < 100; tries++) {
        uint8_t r[12];
        char sfx[sizeof r + 1];
        randombytes_buf(r, sizeof r);
        for (size_t i = 0; i < sizeof r; i++)
            sfx[i] = abc[r[i] % (sizeof abc - 1)];
        sfx[sizeof r] = '\0';
        if ((size_t)snprintf(tmp, cap, "%s.tmp-%s", path, sfx) >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

int tm2__file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                           bool overwrite, const char **what, int *os_err)
{
    *what = NULL;
    *os_err = 0;
    char tmp[PATH_MAX];
    int fd = create_tmp(path, tmp, sizeof tmp);
    if (fd < 0) {
        *what = errno == ENAMETOOLONG ? "name a temporary file for" : "create a temporary file for";
        *os_err = errno;
        return TM2_EIO;
    }
    if (fchmod(fd, mode) < 0)
        *os_err = errno, *what = "set the mode of the temporary file for";
    else if (write_all(fd, data, len) < 0)
        *os_err = errno, *what = "write the temporary file for";
    else if (fsync(fd) < 0)
        *os_err = errno, *what = "sync the temporary file for";
    if (close(fd) < 0 && !*what)
        *os_err = errno, *what = "close the temporary file for";
    if (!*what && publish(tmp, path, overwrite) < 0) {
        *os_err = errno;
        *what = "move the new file into place at";
    }
    if (*what) {
        unlink(tmp);
        return *os_err == EEXIST && !overwrite ? TM2_EEXIST : TM2_EIO;
    }
    if (sync_dir_of(path) < 0) {
        *os_err = errno;
        *what = "sync the directory of";
        return TM2_EIO;
    }
    return 0;
}

int tm2__mkdirs(const char *dir, mode_t mode)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, mode) && errno != EEXIST ? -1 : 0;
}
