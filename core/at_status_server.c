/*
 * at_status_server.c: the parts of the status document a host server adds
 * about itself (which process renews, the shared region), and reading the
 * model from a directory store, so every host shows the same.
 */
#include "at_status.h"

#include "at_time.h"

json_t *at_status_read(const at_conf *conf, const char *store_dir, time_t now, at_error *err)
{
    at_store *st = at_store_open_dir(store_dir, err);
    json_t *status = NULL;

    if (st) {
        status = at_status_collect(conf, st, now, err);
        at_store_close(st);
    }
    if (!status)
        at_error_prefix(err, "reading the status from %s failed", store_dir ? store_dir : "(no store)");
    return status;
}

static json_t *shared_memory(at_live *live)
{
    at_live_stats ls;
    json_t *o;

    at_live_get_stats(live, &ls);
    o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}",
                  "size", (json_int_t)ls.size,
                  "used", (json_int_t)ls.used,
                  "certificates", (json_int_t)ls.certs,
                  "pending_http01", (json_int_t)ls.http01,
                  "pending_tlsalpn01", (json_int_t)ls.alpn01,
                  "generation", (json_int_t)ls.generation);
    return o;
}

int at_status_set_server(json_t *status, const at_status_server *srv)
{
    char when[AT_TIME_BUFSIZE];
    json_t *o = json_object(), *shm = NULL;
    int rv = 0;

    if (!o || !json_is_object(status))
        goto fail;
    rv |= json_object_set_new(o, "software", json_string(srv->software ? srv->software : "unknown"));
    rv |= json_object_set_new(o, "version", srv->version ? json_string(srv->version) : json_null());
    rv |= json_object_set_new(o, "renewal_pid", srv->renewal_pid ? json_integer(srv->renewal_pid)
                                                                 : json_null());
    rv |= json_object_set_new(o, "renewal_since",
                              srv->renewal_pid && srv->renewal_since > 0
                              ? json_string(at_time_format(srv->renewal_since, when, sizeof(when)))
                              : json_null());
    if (srv->live) {
        shm = shared_memory(srv->live);
        rv |= shm ? json_object_set_new(o, "shared_memory", shm) : -1;
    }
    if (rv != 0)
        goto fail;
    return json_object_set_new(status, "server", o) == 0 ? 0 : -1;
fail:
    json_decref(o);
    return -1;
}
