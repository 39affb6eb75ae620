/*
 * at_engine.h: the loop a host's background thread runs. It asks the planner
 * what is due, runs those orders through the protocol on the driver (several
 * at once, bounded by conf->concurrency), publishes challenges and new
 * certificates to the live table, persists everything to the store, and
 * sleeps until the next due moment or a wake-up. It stops promptly when asked.
 *
 * Ownership: the engine borrows conf, store and live; they must outlive it.
 */
#ifndef AT_ENGINE_H
#define AT_ENGINE_H

#include <jansson.h>
#include "at_error.h"
#include "at_conf.h"
#include "at_store.h"
#include "at_live.h"
#include "at_log.h"
#include "at_acme.h"

typedef struct at_engine at_engine;

at_engine *at_engine_new(const at_conf *conf, at_store *store, at_live *live,
                         const at_logger *log, at_error *err);
void at_engine_free(at_engine *e);

/* Publish every stored certificate of conf into live (no network). Hosts call
 * this at startup, before workers serve, so that existing certificates are
 * served at once. Damaged entries are reported and skipped. Returns the
 * number published, or -1 if the live table cannot hold them. */
int at_engine_preload(const at_conf *conf, at_store *store, at_live *live,
                      const at_logger *log, at_error *err);

/* Run until at_engine_stop. Returns 0 after a clean stop. */
int at_engine_run(at_engine *e);

/* Work until nothing is due now (every certificate valid, or failed and in
 * backoff), or max_seconds pass. For the tool. Returns 0 if every certificate
 * is valid, -1 with err describing the first failure otherwise. */
int at_engine_run_once(at_engine *e, long max_seconds, at_error *err);

/* Thread-safe. */
void at_engine_stop(at_engine *e);
void at_engine_wake(at_engine *e);

/* Renew this certificate (id or one of its names; NULL = all) now, even if
 * it is not due. Recorded in the store so it survives a restart. */
int at_engine_force(at_engine *e, const char *id_or_name, at_error *err);

/* Synchronous one-off operations for the tool (they run the driver until done). */
int at_engine_revoke(at_engine *e, const char *id, int reason, at_error *err);
int at_engine_account(at_engine *e, size_t ca_index, at_account_action action,
                      const char *const *contact, size_t ncontact,
                      json_t **account_out, at_error *err);

/* Events for the notify command: called after each issuance or failure. The
 * engine runs conf->notify_command itself as "CMD EVENT ID NAME..." where
 * EVENT is "issued", "renewed" or "failed"; this is for hosts that want more. */
typedef void at_engine_event_fn(void *ud, const char *event, const at_cert_conf *cert,
                                const at_error *err);
void at_engine_on_event(at_engine *e, at_engine_event_fn *fn, void *ud);

#endif
