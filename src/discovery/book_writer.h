/* Internal: the address book's background writer, so the blocking half of a
 * save (write, two fsyncs, rename: tm2__addrbook_write_file) never runs on
 * the network thread.
 *
 * One writer thread per book file. The owner hands it the encoded book and
 * its generation (tm2__addrbook_encode); the thread writes it and records
 * the outcome, which the owner collects later and applies to the book
 * (tm2__addrbook_saved on success). At most one buffer waits: a newer
 * submission replaces one not yet being written (latest wins), so memory
 * stays bounded at two books (one being written, one waiting) however slow
 * the disk is.
 *
 * Thread rules: new, submit, collect, drain and free are for one owner
 * thread (the network thread; at shutdown, whichever thread stops the
 * switch). Only the write function runs on the writer's thread; it must not
 * touch the book. */
#ifndef TM2_DISCOVERY_BOOK_WRITER_H
#define TM2_DISCOVERY_BOOK_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "discovery/pex_core.h"

/* Writes text to path; 0 or a TM2_E* code with the reason in why. Runs on
 * the writer's thread. */
typedef int (*tm2__book_write_fn)(void *user, const char *path, const char *text, size_t len,
                                  char *why, size_t why_len);

typedef struct tm2__book_writer tm2__book_writer;

/* Starts the thread. write_fn NULL = tm2__addrbook_write_file (user unused).
 * path is copied. 0, TM2_EINVAL or TM2_ENOMEM (no memory or no thread). */
int tm2__book_writer_new(const char *path, tm2__book_write_fn write_fn, void *user,
                         tm2__book_writer **out);

/* Queues text (malloc'd, len bytes plus a NUL) of generation gen. text
 * becomes the writer's in every case; a waiting older buffer is freed
 * unwritten. Never blocks on the disk. 0, or TM2_EINVAL (text NULL). */
int tm2__book_writer_submit(tm2__book_writer *w, char *text, size_t len, uint64_t gen);

/* What finished since the last collect (zeroed when nothing did).
 * Non-blocking. */
void tm2__book_writer_collect(tm2__book_writer *w, tm2__pex_save_result *out);

/* Blocks until nothing waits and nothing is being written. */
void tm2__book_writer_drain(tm2__book_writer *w);

/* Buffers replaced before they were written, for tests. */
uint64_t tm2__book_writer_replaced(tm2__book_writer *w);

/* Writes what still waits, then joins the thread and frees. NULL is fine.
 * Results not collected are lost. */
void tm2__book_writer_free(tm2__book_writer *w);

#endif
