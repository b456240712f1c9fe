/*
 * notifications_store.h -- the notifications service's SQLite table.
 *
 *     notifications(event_id TEXT PRIMARY KEY, order_id TEXT UNIQUE,
 *                   customer, text, created_at)
 *
 * One connection in serialized mode shared by the event handler and the
 * workers, WAL journal; every write is one statement.
 */
#ifndef NOTIFICATIONS_STORE_H
#define NOTIFICATIONS_STORE_H

#include <stddef.h>

struct sqlite3;

/*
 * Opens with sqlite_tx_open() (serialized, WAL, synchronous=NORMAL, 5 s
 * busy timeout) and creates the table if needed. 0, or -1 with a message
 * on stderr and nothing left open.
 */
int notifications_store_open(struct sqlite3 **out, const char *path);
/* Closes; NULL is a no-op. */
void notifications_store_close(struct sqlite3 *db);

/*
 * Records a notification with INSERT OR IGNORE: 0 when a row was added,
 * 1 when the event id or the order id was already recorded (nothing
 * written), -1 on error with the text in err[cap].
 */
int notifications_store_add(struct sqlite3 *db, const char *event_id, const char *order_id, const char *customer,
                            const char *text, char *err, size_t cap);

/* One row for notifications_store_list(); strings valid during the call only. Non-zero stops the listing. */
typedef int (*notifications_row_fn)(void *user, const char *event_id, const char *order_id, const char *customer,
                                    const char *text, const char *created_at);

/* Calls `fn` for each notification of `customer`, oldest first. 0, or -1 on error (text in err[cap]). */
int notifications_store_list(struct sqlite3 *db, const char *customer, notifications_row_fn fn, void *user, char *err,
                             size_t cap);

#endif
