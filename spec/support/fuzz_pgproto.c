/*
 * fuzz_pgproto.c - libFuzzer target for the wire-protocol codec
 * (core/pgproto.c, core/pgproto_build.c).
 *
 * Built two ways:
 *   clang -fsanitize=fuzzer,address,undefined -DSY_FUZZ_LIBFUZZER ...
 *     the real fuzzer (spec/core/pgproto_spec.lua runs it, time-bounded);
 *   the Makefile's tools rule, as a plain program that replays the files
 *     named on its command line (or stdin) through the same entry point,
 *     so a crash input can be reproduced without clang's fuzzer runtime.
 *
 * The tools rule compiles one file and links only libev, so the codec's
 * sources are included here rather than linked: the target stays a single
 * translation unit that builds the same in both modes.
 *
 * Beyond "no crash, no sanitizer report", it checks properties: framing a
 * prefix of a message never claims a message, everything a parser accepts
 * re-encodes to a message that parses back to the same fields.
 */
#include "../../core/pgproto.c"
#include "../../core/pgproto_build.c"
#include "../../core/util.c"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "fuzz_pgproto: property failed: %s (line %d)\n", \
                    #cond, __LINE__);                                      \
            abort();                                                       \
        }                                                                  \
    } while (0)

static int span_eq(sy_pg_span a, sy_pg_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Framing a strict prefix of a complete message must ask for more. */
static void check_prefixes(const char *p, size_t total, size_t max_len, int startup)
{
    size_t step = total > 64 ? total / 16 : 1;
    for (size_t n = 0; n < total; n += step) {
        sy_pg_msg m;
        sy_pg_startup s;
        sy_pg_error e;
        int rc = startup ? sy__pg_read_startup(p, n, max_len, &s, &e)
                         : sy__pg_frame(p, n, max_len, &m, &e);
        CHECK(rc == SY_PG_NEED_MORE);
    }
}

static void fuzz_bind(const sy_pg_msg *m, sy_buf *out)
{
    sy_pg_bind bd;
    sy_pg_error e;
    if (sy__pg_parse_bind(m, &bd, &e) != SY_PG_OK)
        return;
    size_t pos = 0, n = 0;
    sy_pg_span v;
    while (sy__pg_bind_next_value(&bd, &pos, &v))
        n++;
    CHECK(n == bd.nparams);
    for (uint16_t i = 0; i < bd.nparams; i++)
        CHECK(sy__pg_bind_param_format(&bd, i) <= 1);

    sy__buf_reset(out);
    if (sy__pg_build_bind_renamed(out, &bd, "sy_1", 4) != 0)
        return;
    sy_pg_msg m2;
    sy_pg_bind b2;
    CHECK(sy__pg_frame(out->buf, out->len, 0, &m2, &e) == SY_PG_OK);
    CHECK(m2.total == out->len);
    CHECK(sy__pg_parse_bind(&m2, &b2, &e) == SY_PG_OK);
    CHECK(span_eq(b2.portal, bd.portal));
    CHECK(b2.statement.len == 4 && memcmp(b2.statement.p, "sy_1", 4) == 0);
    CHECK(b2.nparams == bd.nparams && b2.nresults == bd.nresults);
    CHECK(b2.tail_len == bd.tail_len && memcmp(b2.tail, bd.tail, bd.tail_len) == 0);
}

/* Runs every parser on the message: each must either fail cleanly or
 * return spans inside the payload. */
static void fuzz_parsers(const sy_pg_msg *m, sy_buf *out)
{
    sy_pg_error e;
    sy_pg_span s, s2;
    const char *end = m->payload + m->payload_len;
    if (sy__pg_parse_query(m, &s, &e) == SY_PG_OK) {
        CHECK(s.p + s.len < end && s.p[s.len] == '\0');
        sy__buf_reset(out);
        if (sy__pg_build_query(out, s.p, s.len) == 0) {
            sy_pg_msg m2;
            CHECK(sy__pg_frame(out->buf, out->len, 0, &m2, &e) == SY_PG_OK);
            CHECK(m2.payload_len == m->payload_len);
            CHECK(memcmp(m2.payload, m->payload, m->payload_len) == 0);
        }
    }
    sy_pg_parse pa;
    if (sy__pg_parse_parse(m, &pa, &e) == SY_PG_OK) {
        uint32_t sum = 0;
        for (uint16_t i = 0; i < pa.nparams; i++)
            sum += sy__pg_parse_param_type(&pa, i);
        (void)sum;
        CHECK(pa.param_types + (size_t)pa.nparams * 4 == end);
    }
    fuzz_bind(m, out);
    sy_pg_target t;
    if (sy__pg_parse_describe(m, &t, &e) == SY_PG_OK)
        CHECK(t.kind == 'S' || t.kind == 'P');
    sy_pg_execute ex;
    sy__pg_parse_execute(m, &ex, &e);
    sy__pg_parse_empty(m, &e);
    sy_pg_sasl_initial si;
    if (sy__pg_parse_sasl_initial(m, &si, &e) == SY_PG_OK && si.data.p)
        CHECK(si.data.p + si.data.len == end);
    char status;
    sy__pg_parse_ready(m, &status, &e);
    size_t pos = 0;
    char code;
    int valid = sy__pg_parse_fields(m, &e) == SY_PG_OK;
    while (sy__pg_next_field(m, &pos, &code, &s))
        CHECK(s.p + s.len < end);
    if (valid)
        CHECK(pos + 1 == m->payload_len);
    sy__pg_parse_parameter_status(m, &s, &s2, &e);
    uint32_t pid, key;
    sy__pg_parse_backend_key(m, &pid, &key, &e);
    sy_pg_auth au;
    if (sy__pg_parse_auth(m, &au, &e) == SY_PG_OK && au.code == 10) {
        pos = 0;
        while (sy__pg_next_string(&au.data, &pos, &s))
            CHECK(s.len > 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first byte picks a size limit, so the oversize paths are hit
     * without huge inputs. */
    size_t max_len = size ? (size_t)data[0] * 4 : 0;
    const char *p = (const char *)data;
    sy_buf out;
    sy__buf_init(&out);

    sy_pg_startup st;
    sy_pg_error e;
    if (sy__pg_read_startup(p, size, max_len, &st, &e) == SY_PG_OK) {
        check_prefixes(p, st.msg.total, max_len, 1);
        size_t pos = 0, n = 0;
        sy_pg_span k, v;
        while (sy__pg_startup_next_param(&st, &pos, &k, &v)) {
            CHECK(k.len > 0 && k.p[k.len] == '\0' && v.p[v.len] == '\0');
            n++;
        }
        CHECK(n == st.nparams);
    }

    /* Then the same bytes as a stream of normal messages. */
    size_t off = 0;
    while (off < size) {
        sy_pg_msg m;
        int rc = sy__pg_frame(p + off, size - off, max_len, &m, &e);
        if (rc != SY_PG_OK)
            break;
        CHECK(m.total >= 5 && m.total <= size - off);
        check_prefixes(p + off, m.total, max_len, 0);
        fuzz_parsers(&m, &out);
        off += m.total;
    }
    sy__buf_free(&out);
    return 0;
}

#ifndef SY_FUZZ_LIBFUZZER
static int run_file(FILE *f, const char *name)
{
    sy_buf in;
    sy__buf_init(&in);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (sy__buf_append(&in, chunk, n) < 0) {
            fprintf(stderr, "fuzz_pgproto: out of memory reading %s\n", name);
            sy__buf_free(&in);
            return 1;
        }
    LLVMFuzzerTestOneInput((const uint8_t *)in.buf, in.len);
    sy__buf_free(&in);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return run_file(stdin, "stdin");
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "fuzz_pgproto: cannot open %s\n", argv[i]);
            return 1;
        }
        int rc = run_file(f, argv[i]);
        fclose(f);
        if (rc)
            return rc;
    }
    return 0;
}
#endif
