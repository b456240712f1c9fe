/*
 * conversions_store.h -- the conversions service's SQLite history.
 *
 * One row per saved conversion: (id, tx, inches, cm, created_at).
 * Thread-safe: one connection in serialized mode, WAL journal.
 */
#ifndef CONVERSIONS_STORE_H
#define CONVERSIONS_STORE_H

#include <stdint.h>

typedef struct conversions_store conversions_store_t;

/* Opens (creating the table if needed). 0, or -1 with a message on stderr. */
int conversions_store_open(conversions_store_t **out, const char *path);
void conversions_store_close(conversions_store_t *store);
/* The store's SQLite connection (serialized): natomic keeps its own tables there. */
struct sqlite3 *conversions_store_db(conversions_store_t *store);

/* Saves a row; writes its id to *id. 0 or -1. */
int conversions_store_save(conversions_store_t *store, const char *tx, double inches, double cm, int64_t *id);
/* Deletes a row by id; 0 also when it was already gone (idempotent), -1 on error. */
int conversions_store_delete(conversions_store_t *store, int64_t id);
/* Number of rows, or -1. */
int64_t conversions_store_count(conversions_store_t *store);
/* The last error text of the store's connection (borrowed). */
const char *conversions_store_error(conversions_store_t *store);

#endif
