/* The crawler database's schema migrations, embedded at build time from
 * src/crawl/migrations/NNNN_name.sql (cmake/embed_sql.cmake). store.c applies
 * those above the database's schema_version, in order, each in its own
 * transaction. */
#ifndef TM2_CRAWL_MIGRATIONS_H
#define TM2_CRAWL_MIGRATIONS_H

#include <stddef.h>

typedef struct crawl_migration {
    int version;          /* the number the file name starts with */
    const char *name;     /* the file name */
    const char *sql;      /* its text */
} crawl_migration;

/* In ascending version order; crawl_n_migrations entries. */
extern const crawl_migration crawl_migrations[];
extern const size_t crawl_n_migrations;

#endif
