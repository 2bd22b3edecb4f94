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

static const sy_auth_entry *lookup(sy_client *c)
{
    sy_authfile *af = c->proxy->authfile;
    return af ? sy__authfile_lookup(af, c->user) : NULL;
}

static void auth_failed(sy_client *c, const char *detail)
{
    c->proxy->stats.logins_failed++;
    sy__log(c->proxy->engine, SY_LOG_INFO, "client %s: login of user \"%s\" failed: %s",
            c->peer, c->user, detail ? detail : "");
    sy__client_fatal(c, "28P01", "password authentication failed for user \"%s\"",
                     c->user);
}

void sy__client_auth_start(sy_client *c)
{
    sy_proxy *px = c->proxy;
    switch (px->set.auth_type) {
    case SY_AUTH_MD5:
        if (sy__md5_salt(c->md5_salt) < 0) {
            sy__client_fatal(c, "XX000", "could not generate a random salt");
            return;
        }
        sy__pg_build_auth_md5(&c->out, c->md5_salt);
        c->auth_step = 1;
        sy__client_flush(c);
        return;
    case SY_AUTH_SCRAM: {
        const sy_auth_entry *e = lookup(c);
        if (sy__scram_new(c->user, e ? e->secret : NULL, px->mock_key, &c->scram) < 0) {
            sy__client_fatal(c, "53200", "out of memory");
            return;
        }
        static const char *const mechs[] = {"SCRAM-SHA-256", NULL};
        sy__pg_build_auth_sasl(&c->out, mechs);
        c->auth_step = 1;
        sy__client_flush(c);
        return;
    }
    default:
        sy__client_login_done(c);
        return;
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
    const sy_auth_entry *e = lookup(c);
    const char *detail = NULL;
    int rc = sy__md5_verify(c->user, e ? e->secret : NULL, c->md5_salt, pw.p, pw.len,
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
    char **users = c->proxy->set.admin_users;
    if (!users || !users[0])
        return 1; /* no list: any user who logged in */
    for (int i = 0; users[i]; i++)
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
