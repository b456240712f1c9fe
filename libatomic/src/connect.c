/*
 * connect.c -- reaching NATS: the URL, who we are, and TLS.
 *
 * A service or a tool built on libnatomic connects the way the `nats` CLI
 * does, so the same flags and environment work everywhere: a server URL
 * (NATS_URL), a user and password (NATS_USER, NATS_PASSWORD), a token
 * (NATS_TOKEN), a credentials file holding a JWT and its nkey seed
 * (NATS_CREDS), and TLS: a client certificate and key (NATS_CERT,
 * NATS_KEY) and the CA that signed the server's (NATS_CA).
 *
 * Three rules shape the code:
 *   - Everything is checked before connecting. A file that is missing or
 *     unreadable, a certificate without its key, a password without a
 *     user, two ways of proving who we are at once: each is a clear error
 *     naming the option and the file, and nothing is sent. A server that
 *     refuses the credentials is a connect error, said as nats.c says it.
 *   - Secrets never leave in text. Messages name options and files, never
 *     a password or a token, and a URL is logged with its user:password@
 *     replaced by ***@ (natomic_url_redacted). Passwords on the command
 *     line are visible in the process list: NATS_PASSWORD, NATS_TOKEN or a
 *     credentials file keep them out of it.
 *   - natomic_connect() stays what it was: the same URL and options, plus
 *     what natomic needs (sends go out at once), so code that builds its
 *     own natsOptions keeps working.
 */
#include "natomic_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_URL "nats://127.0.0.1:4222"

/* A caller may pass no message buffer: the message then goes to `local`, unread. */
#define USE_LOCAL_IF_NULL(err, errcap, local) \
    do {                                      \
        if ((err) == NULL || (errcap) == 0) { \
            (err) = (local);                  \
            (errcap) = sizeof(local);         \
        }                                     \
    } while (0)

/* nats.c's last error without its "(file.c:123): " source position; NULL when there is none. */
static const char *last_error_text(void)
{
    const char *why = nats_GetLastError(NULL);
    if (why != NULL && why[0] == '(' && strstr(why, "): ") != NULL)
        why = strstr(why, "): ") + 3;
    return why != NULL && *why != '\0' ? why : NULL;
}

NATOMIC_API const char *natomic_default_url(void)
{
    const char *env = getenv("NATS_URL");
    return env != NULL && *env != '\0' ? env : DEFAULT_URL;
}

NATOMIC_API const char *natomic_url_redacted(char *buf, size_t cap, const char *url)
{
    if (buf == NULL || cap == 0)
        return "";
    if (url == NULL)
        url = natomic_default_url();
    /* Each URL of a comma list: the user info before the host (user:password@, token@) becomes ***@. */
    size_t used = 0;
    buf[0] = '\0';
    for (const char *p = url; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        const char *scheme = strstr(p, "://");
        const char *host = scheme != NULL && (size_t)(scheme - p) < len ? scheme + 3 : p;
        const char *at = NULL;
        for (const char *q = host; q < p + len; q++)
            if (*q == '@')
                at = q; /* the last @ before the host: a password may hold '@' */
        int n = at != NULL ? snprintf(buf + used, cap - used, "%s%.*s***%.*s", used > 0 ? "," : "",
                                      (int)(host - p), p, (int)(p + len - at), at)
                           : snprintf(buf + used, cap - used, "%s%.*s", used > 0 ? "," : "", (int)len, p);
        if (n < 0 || (size_t)n >= cap - used)
            break;
        used += (size_t)n;
        p += len;
        if (*p == ',')
            p++;
    }
    return buf;
}

static const char *env_or(const char *given, const char *name)
{
    if (given != NULL && *given != '\0')
        return given;
    const char *env = getenv(name);
    return env != NULL && *env != '\0' ? env : NULL;
}

NATOMIC_API void natomic_conn_config_from_env(natomic_conn_config_t *c)
{
    if (c == NULL)
        return;
    c->url = env_or(c->url, "NATS_URL");
    c->user = env_or(c->user, "NATS_USER");
    c->password = env_or(c->password, "NATS_PASSWORD");
    c->token = env_or(c->token, "NATS_TOKEN");
    c->creds_file = env_or(c->creds_file, "NATS_CREDS");
    c->nkey_file = env_or(c->nkey_file, "NATS_NKEY");
    c->tls_cert = env_or(c->tls_cert, "NATS_CERT");
    c->tls_key = env_or(c->tls_key, "NATS_KEY");
    c->tls_ca = env_or(c->tls_ca, "NATS_CA");
    c->inbox_prefix = env_or(c->inbox_prefix, "NATS_INBOX_PREFIX");
}

NATOMIC_API natomic_status_t natomic_conn_config_set(natomic_conn_config_t *c, const char *flag, const char *value)
{
    if (c == NULL || flag == NULL || value == NULL)
        return NATOMIC_EINVAL;
    while (*flag == '-')
        flag++;
    static const struct {
        const char *name;
        size_t offset;
    } fields[] = {
        {"server", offsetof(natomic_conn_config_t, url)},       {"nats", offsetof(natomic_conn_config_t, url)},
        {"user", offsetof(natomic_conn_config_t, user)},        {"password", offsetof(natomic_conn_config_t, password)},
        {"token", offsetof(natomic_conn_config_t, token)},      {"creds", offsetof(natomic_conn_config_t, creds_file)},
        {"tlscert", offsetof(natomic_conn_config_t, tls_cert)}, {"tlskey", offsetof(natomic_conn_config_t, tls_key)},
        {"tlsca", offsetof(natomic_conn_config_t, tls_ca)},     {"inbox-prefix", offsetof(natomic_conn_config_t, inbox_prefix)},
        {"nkey", offsetof(natomic_conn_config_t, nkey_file)},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (strcmp(flag, fields[i].name) == 0) {
            *(const char **)((char *)c + fields[i].offset) = value;
            return NATOMIC_OK;
        }
    return NATOMIC_EINVAL;
}

NATOMIC_API const char *natomic_conn_config_help(void)
{
    return "  --server URL      NATS server(s), a comma list (default: $NATS_URL or nats://127.0.0.1:4222)\n"
           "  --user NAME       user name (or $NATS_USER), with --password P (or $NATS_PASSWORD: a flag\n"
           "                    shows in the process list, the variable does not)\n"
           "  --token T         authorization token (or $NATS_TOKEN)\n"
           "  --creds FILE      credentials file: user JWT and nkey seed (or $NATS_CREDS)\n"
           "  --nkey FILE       a user's nkey seed file, SU... (or $NATS_NKEY); the server lists its public key\n"
           "  --tlscert FILE    TLS client certificate, PEM (or $NATS_CERT), with --tlskey FILE ($NATS_KEY)\n"
           "  --tlsca FILE      CA certificates that signed the server's, PEM (or $NATS_CA); turns TLS on\n"
           "  --inbox-prefix P  where replies come, e.g. _INBOX.<identity> for a server that gives each\n"
           "                    identity its own replies only (or $NATS_INBOX_PREFIX; default _INBOX)\n";
}

/* A file the option names must be there and readable; false with a message. */
static bool readable(const char *option, const char *path, char *err, size_t cap)
{
    if (path == NULL)
        return true;
    if (*path == '\0' || access(path, R_OK) != 0) {
        snprintf(err, cap, "%s %s: %s", option, path, *path == '\0' ? "empty file name" : strerror(errno));
        return false;
    }
    return true;
}

/* Whether the URL carries user info (user:password@ or token@). */
static bool url_has_userinfo(const char *url)
{
    char redacted[1024];
    return url != NULL && strcmp(natomic_url_redacted(redacted, sizeof redacted, url), url) != 0;
}

NATOMIC_API natomic_status_t natomic_conn_config_check(const natomic_conn_config_t *c, char *err, size_t errcap)
{
    char local[256];
    USE_LOCAL_IF_NULL(err, errcap, local);
    err[0] = '\0';
    if (c == NULL) {
        snprintf(err, errcap, "no connection settings");
        return NATOMIC_EINVAL;
    }
    if (c->url != NULL && *c->url == '\0') {
        snprintf(err, errcap, "--server: empty URL");
        return NATOMIC_EINVAL;
    }
    if (c->password != NULL && c->user == NULL) {
        snprintf(err, errcap, "a password (--password or NATS_PASSWORD) needs a user (--user or NATS_USER)");
        return NATOMIC_EINVAL;
    }
    int ways = (c->user != NULL) + (c->token != NULL) + (c->creds_file != NULL) + (c->nkey_file != NULL) +
               url_has_userinfo(c->url);
    if (ways > 1) {
        snprintf(err, errcap, "more than one way to authenticate (user and password, token, credentials file, "
                              "nkey, user info in the URL): give one");
        return NATOMIC_EINVAL;
    }
    if (c->inbox_prefix != NULL) {
        const char *p = c->inbox_prefix;
        size_t n = strlen(p);
        bool bad = n == 0 || n > 128 || p[0] == '.' || p[n - 1] == '.' || strstr(p, "..") != NULL ||
                   strpbrk(p, "*> \t\r\n") != NULL;
        if (bad) {
            snprintf(err, errcap, "--inbox-prefix '%.128s': a subject of 1 to 128 characters without wildcards, "
                                  "spaces or empty tokens, e.g. _INBOX.client", p);
            return NATOMIC_EINVAL;
        }
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        snprintf(err, errcap, "a TLS client certificate needs its key and the other way round (--tlscert and --tlskey)");
        return NATOMIC_EINVAL;
    }
    if (!readable("--creds", c->creds_file, err, errcap) || !readable("--nkey", c->nkey_file, err, errcap) ||
        !readable("--tlscert", c->tls_cert, err, errcap) ||
        !readable("--tlskey", c->tls_key, err, errcap) || !readable("--tlsca", c->tls_ca, err, errcap))
        return NATOMIC_EINVAL;
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_conn_options(natsOptions **out, const natomic_conn_config_t *c, char *err,
                                                  size_t errcap)
{
    char local[256];
    USE_LOCAL_IF_NULL(err, errcap, local);
    if (out == NULL)
        return NATOMIC_EINVAL;
    *out = NULL;
    natomic_status_t st = natomic_conn_config_check(c, err, errcap);
    if (st != NATOMIC_OK)
        return st;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    const char *what = "options";
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 100);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, 2000);
    if (s == NATS_OK && c->user != NULL && (what = "--user/--password") != NULL)
        s = natsOptions_SetUserInfo(o, c->user, c->password != NULL ? c->password : "");
    if (s == NATS_OK && c->token != NULL && (what = "--token") != NULL)
        s = natsOptions_SetToken(o, c->token);
    if (s == NATS_OK && c->creds_file != NULL && (what = "--creds") != NULL)
        s = natsOptions_SetUserCredentialsFromFiles(o, c->creds_file, NULL);
    if (s == NATS_OK && c->nkey_file != NULL) {
        char pub[64];
        if ((st = natomic__nkey_public(c->nkey_file, pub, sizeof pub, err, errcap)) != NATOMIC_OK) {
            natsOptions_Destroy(o);
            return st;
        }
        what = "--nkey";
        s = natsOptions_SetNKeyFromSeed(o, pub, c->nkey_file);
    }
    if (s == NATS_OK && c->inbox_prefix != NULL && (what = "--inbox-prefix") != NULL)
        s = natsOptions_SetCustomInboxPrefix(o, c->inbox_prefix);
    bool tls = c->tls_ca != NULL || c->tls_cert != NULL;
    if (s == NATS_OK && tls && (what = "TLS") != NULL)
        s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK && c->tls_ca != NULL && (what = "--tlsca") != NULL)
        s = natsOptions_LoadCATrustedCertificates(o, c->tls_ca);
    if (s == NATS_OK && c->tls_cert != NULL && (what = "--tlscert/--tlskey") != NULL)
        s = natsOptions_LoadCertificatesChain(o, c->tls_cert, c->tls_key);
    if (s != NATS_OK) {
        /* nats.c's text says what was wrong with a file (not a certificate, no key in it), never a secret. */
        const char *why = last_error_text();
        snprintf(err, errcap, "%s: %s", what, why != NULL ? why : natsStatus_GetText(s));
        natsOptions_Destroy(o);
        return s == NATS_NO_MEMORY ? NATOMIC_ENOMEM : NATOMIC_EINVAL;
    }
    *out = o;
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_connect_config(natsConnection **out, const natomic_conn_config_t *c, char *err,
                                                    size_t errcap)
{
    char local[256];
    USE_LOCAL_IF_NULL(err, errcap, local);
    if (out == NULL || c == NULL)
        return NATOMIC_EINVAL;
    natsOptions *o = NULL;
    natomic_status_t st = natomic_conn_options(&o, c, err, errcap);
    if (st != NATOMIC_OK)
        return st;
    st = natomic_connect(out, c->url, o);
    natsOptions_Destroy(o);
    if (st != NATOMIC_OK) {
        char url[512];
        const char *why = last_error_text();
        snprintf(err, errcap, "cannot connect to %s: %s", natomic_url_redacted(url, sizeof url, c->url),
                 why != NULL ? why : natomic_strerror(st));
    }
    return st;
}

/* The URL, or each URL of a comma list (a cluster: nats.c tries them all and learns the rest). */
static natsStatus set_servers(natsOptions *opts, const char *url)
{
    if (strchr(url, ',') == NULL)
        return natsOptions_SetURL(opts, url);
    char *copy = strdup(url);
    const char *list[32];
    int n = 0;
    if (copy == NULL)
        return NATS_NO_MEMORY;
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p != NULL && n < 32; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ')
            p++;
        if (*p != '\0')
            list[n++] = p;
    }
    natsStatus s = n > 0 ? natsOptions_SetServers(opts, list, n) : NATS_INVALID_ARG; /* it copies them */
    free(copy);
    return s;
}

NATOMIC_API natomic_status_t natomic_connect(natsConnection **out, const char *url, natsOptions *opts)
{
    if (out == NULL)
        return NATOMIC_EINVAL;
    natsOptions *own = NULL;
    if (opts == NULL) {
        if (natsOptions_Create(&own) != NATS_OK)
            return NATOMIC_ENOMEM;
        opts = own;
    }
    natsStatus s = set_servers(opts, url != NULL ? url : natomic_default_url());
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK && own != NULL) {
        s = natsOptions_SetMaxReconnect(opts, -1);
        if (s == NATS_OK)
            s = natsOptions_SetReconnectWait(opts, 100);
        if (s == NATS_OK)
            s = natsOptions_SetTimeout(opts, 2000);
    }
    natsConnection *nc = NULL;
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(own);
    if (s != NATS_OK) {
        char shown[512];
        natomic__log(NATOMIC_LOG_ERROR, NULL, "cannot connect to %s: %s", natomic_url_redacted(shown, sizeof shown, url),
                     natsStatus_GetText(s));
        return NATOMIC_ENATS;
    }
    *out = nc;
    return NATOMIC_OK;
}
