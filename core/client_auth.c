/*
 * client_auth.c - a client's login: trust, md5 or SCRAM-SHA-256 against
 * the auth file (auth.h does the cryptography), the admin-user check, then
 * the login reply (AuthenticationOk, ParameterStatus, BackendKeyData,
 * ReadyForQuery).  Every failed password looks the same to the client,
 * whether the user exists or not.
 */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

static void auth_failed(sy_client *c, const char *detail)
{
    c->proxy->stats.logins_failed++;
    sy__log(c->proxy->engine, SY_LOG_INFO, "client %s: login of user \"%s\" failed: %s",
            c->peer, c->user, detail ? detail : "");
    sy__client_fatal(c, "28P01", "password authentication failed for user \"%s\"",
                     c->user);
}

/* The password exchange, once the user's secret is known (NULL: no such
 * user, which fails later exactly like a wrong password). */
static void auth_begin(sy_client *c)
{
    sy_proxy *px = c->proxy;
    if (px->set.auth_type == SY_AUTH_MD5) {
        if (sy__md5_salt(c->md5_salt) < 0) {
            sy__client_fatal(c, "XX000", "could not generate a random salt");
            return;
        }
        sy__pg_build_auth_md5(&c->out, c->md5_salt);
    } else {
        if (sy__scram_new(c->user, c->secret, px->mock_key, &c->scram) < 0) {
            sy__client_fatal(c, "53200", "out of memory");
            return;
        }
        static const char *const mechs[] = {"SCRAM-SHA-256", NULL};
        sy__pg_build_auth_sasl(&c->out, mechs);
    }
    c->auth_step = 1;
    sy__client_flush(c);
}

/* ------------------------------------------------------------ auth query */

/* An auth query in flight; outlives its client if the client leaves. */
typedef struct sy_auth_lookup {
    sy_client *client; /* NULL once the client is gone */
} sy_auth_lookup;

static void lookup_done(void *data, sy_reply *r)
{
    sy_auth_lookup *lk = data;
    sy_client *c = lk->client;
    free(lk);
    if (!c)
        return;
    c->lookup = NULL;
    if (r->status != 0 || r->sqlstate) {
        sy__log(c->proxy->engine, SY_LOG_WARN, "auth query for \"%s\" failed: %s", c->user,
                r->message ? r->message : sy_strerror(r->status));
        sy__client_fatal(c, "08006", "could not look up the login of user \"%s\"", c->user);
        return;
    }
    PGresult *res = r->nresults > 0 ? r->results[0] : NULL;
    if (res && PQntuples(res) > 0 && !PQgetisnull(res, 0, PQnfields(res) > 1 ? 1 : 0)) {
        /* One column (the secret) or two (name, secret), as PgBouncer's. */
        c->secret = sy__strdup(PQgetvalue(res, 0, PQnfields(res) > 1 ? 1 : 0));
    }
    auth_begin(c);
}

/* Runs proxy.auth.query with $1 = the user through the engine, pinned by
 * a hint to the primary of auth.query_cluster. */
static void start_lookup(sy_client *c)
{
    sy_proxy *px = c->proxy;
    sy_lua *lua = px->engine->lua;
    const char *node = NULL;
    for (int i = 0; i < lua->topo.n; i++) {
        sy_node *n = lua->topo.nodes[i];
        if (n->role == SY_ROLE_PRIMARY && px->set.auth_query_cluster &&
            strcmp(n->cluster, px->set.auth_query_cluster) == 0) {
            node = n->full_name;
            break;
        }
    }
    sy_buf sql;
    sy__buf_init(&sql);
    if (node)
        sy__buf_printf(&sql, "/* sy: node=%s */ ", node);
    sy__buf_puts(&sql, px->set.auth_query);
    sy_auth_lookup *lk = calloc(1, sizeof *lk);
    const char *values[1] = {c->user};
    sy_query_args a = {.sql = sql.buf, .nparams = 1, .param_values = values,
                       .timeout = px->set.connect + 5};
    int rc = lk && !sql.oom ? sy_query(px->engine, &a, lookup_done, lk) : SY_ENOMEM;
    sy__buf_free(&sql);
    if (rc < 0) {
        free(lk);
        sy__client_fatal(c, "08006", "could not look up the login of user \"%s\": %s",
                         c->user, sy_strerror(rc));
        return;
    }
    lk->client = c;
    c->lookup = lk;
}

void sy__client_auth_forget(sy_client *c)
{
    if (c->lookup) {
        c->lookup->client = NULL;
        c->lookup = NULL;
    }
    free(c->secret);
    c->secret = NULL;
}

void sy__client_auth_start(sy_client *c)
{
    sy_proxy *px = c->proxy;
    if (px->set.auth_type == SY_AUTH_TRUST) {
        sy__client_login_done(c);
        return;
    }
    const sy_auth_entry *e = px->authfile ? sy__authfile_lookup(px->authfile, c->user) : NULL;
    if (e) {
        c->secret = sy__strdup(e->secret);
        auth_begin(c);
    } else if (px->set.auth_query) {
        start_lookup(c);
    } else {
        auth_begin(c);
    }
}

static void md5_message(sy_client *c, const sy_pg_msg *m)
{
    sy_pg_span pw;
    sy_pg_error err;
    if (sy__pg_parse_password(m, &pw, &err) < 0) {
        sy__client_fatal(c, err.sqlstate, "%s", err.message);
        return;
    }
    const char *detail = NULL;
    int rc = sy__md5_verify(c->user, c->secret, c->md5_salt, pw.p, pw.len,
                            c->proxy->mock_key, &detail);
    if (rc == SY_AUTH_OK)
        sy__client_login_done(c);
    else
        auth_failed(c, detail);
}

static void scram_message(sy_client *c, const sy_pg_msg *m)
{
    sy_pg_error err;
    const char *out;
    size_t out_len;
    int rc;
    if (c->auth_step == 1) {
        sy_pg_sasl_initial init;
        if (sy__pg_parse_sasl_initial(m, &init, &err) < 0) {
            sy__client_fatal(c, err.sqlstate, "%s", err.message);
            return;
        }
        rc = sy__scram_check_mechanism(init.mechanism.p);
        if (rc == SY_AUTH_OK)
            rc = sy__scram_step(c->scram, init.data.p ? init.data.p : "",
                                init.data.p ? init.data.len : 0, &out, &out_len);
        if (rc == SY_AUTH_CONTINUE) {
            sy__pg_build_auth_sasl_continue(&c->out, out, out_len);
            c->auth_step = 2;
            sy__client_flush(c);
            return;
        }
    } else {
        sy_pg_span data;
        if (sy__pg_parse_sasl_response(m, &data, &err) < 0) {
            sy__client_fatal(c, err.sqlstate, "%s", err.message);
            return;
        }
        rc = sy__scram_step(c->scram, data.p, data.len, &out, &out_len);
        if (rc == SY_AUTH_OK) {
            sy__pg_build_auth_sasl_final(&c->out, out, out_len);
            sy__scram_free(c->scram);
            c->scram = NULL;
            sy__client_login_done(c);
            return;
        }
    }
    if (rc == SY_AUTH_EFAILED) {
        auth_failed(c, sy__scram_detail(c->scram));
        return;
    }
    sy__client_fatal(c, sy__auth_sqlstate(rc), "%s",
                     rc == SY_AUTH_EMECH ? "client selected an invalid SASL authentication mechanism"
                                         : sy__scram_detail(c->scram));
}

void sy__client_auth_message(sy_client *c, const sy_pg_msg *m)
{
    if (m->type != SY_PG_PASSWORD || c->auth_step == 0) {
        sy__client_fatal(c, "08P01",
                         "expected a password message, got message type %d", m->type);
        return;
    }
    if (c->proxy->set.auth_type == SY_AUTH_MD5)
        md5_message(c, m);
    else
        scram_message(c, m);
}

/* ------------------------------------------------------------ login reply */

static int admin_allowed(const sy_client *c)
{
    /* No list: nobody.  A console that can drain every node is not for
     * whoever can log in. */
    char **users = c->proxy->set.admin_users;
    for (int i = 0; users && users[i]; i++)
        if (strcmp(users[i], c->user) == 0)
            return 1;
    return 0;
}

/* The parameters a client sees at login: the server's, with its own
 * startup values on top. */
static void send_login_reply(sy_client *c)
{
    sy_proxy *px = c->proxy;
    sy__pg_build_auth_ok(&c->out);
    for (int i = 0; sy__server_param_names[i]; i++) {
        const char *name = sy__server_param_names[i];
        const char *mine = sy__params_get(&c->startup_params, name);
        const char *v = px->server_param_values[i];
        char plain[512];
        if (mine) {
            /* Stored as an SQL literal: strip the quotes. */
            size_t n = strlen(mine), k = 0;
            for (size_t j = 1; j + 1 < n && k + 1 < sizeof plain; j++) {
                plain[k++] = mine[j];
                if (mine[j] == '\'' && mine[j + 1] == '\'')
                    j++;
            }
            plain[k] = '\0';
            v = plain;
        }
        if (v)
            sy__pg_build_parameter_status(&c->out, name, v);
    }
    sy__pg_build_backend_key(&c->out, c->pid, c->key);
    sy__pg_build_ready(&c->out, 'I');
}

void sy__client_login_finish(sy_client *c)
{
    sy_proxy *px = c->proxy;
    if (sy_session_new(px->engine, &c->session, c->user, c->database,
                       sy__params_get(&c->startup_params, "application_name")) < 0) {
        sy__client_fatal(c, "53200", "out of memory");
        return;
    }
    send_login_reply(c);
    c->state = SY_CLIENT_IDLE;
    ev_timer_stop(px->loop, &c->timer);
    sy__client_arm_timer(c);
    sy__client_process(c);
}

void sy__client_login_done(sy_client *c)
{
    sy_proxy *px = c->proxy;
    if (c->admin && !admin_allowed(c)) {
        sy__client_fatal(c, "28000", "user \"%s\" may not use the admin console",
                         c->user);
        return;
    }
    sy__proxy_register_client(px, c);
    if (px->have_server_params || c->admin) {
        sy__client_login_finish(c);
        return;
    }
    c->state = SY_CLIENT_LOGIN_WAIT;
    sy_list_insert_tail(&px->login_waiters, &c->login_link);
    sy__proxy_need_server_params(px);
}
