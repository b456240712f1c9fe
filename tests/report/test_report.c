/*
 * test_report.c -- the timeline and the report drawn from it.
 *
 * Proves: the timeline keeps entries in time order, cuts long strings
 * without splitting a UTF-8 character, stays bounded at 20000 entries
 * (counting the rest) and takes adds from several threads; the report
 * writes index and per-scenario pages (Markdown and HTML) into a folder it
 * creates; the Mermaid block has one arrow or note per entry with
 * Mermaid's syntax characters escaped; the HTML page is self-contained (an
 * inline SVG, no script, no http(s) address) and escapes recorded text;
 * a failed check is a red row; the summary links every page; a long
 * timeline is cut to a readable diagram that still has every fault and
 * compensation; an unwritable folder is an error with a message; a
 * durable story's recovery is drawn apart (teal boxes, a Mermaid rect) and
 * told in a Recovery section (who claimed which call from whom, when, each
 * compensation, how it ended, the time after the restart), and the
 * summary gives every story's mode. And that the report tells the truth:
 * the timeline merges entries by the time their source stamped, not the
 * order they arrived; a fault point that fired is its own mark (a burst)
 * on its service's lane, the lab's timeout its own on the lab's; arm,
 * restart, resume, release and heal are five things with five colours and
 * words; long labels wrap and nothing is cut (a reply's status, an error's
 * type and code stay); the drawing scales to the page and scrolls; the
 * summary gives a story whose expected violation was seen its own state,
 * colour, tile and column; its summaries are whole sentences. The same
 * story played for real is test_report_story.sh's. Memory is checked by
 * the valgrind setup.
 */
#include <check.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"
#include "timeline.h"

/* ---- helpers ------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_temp_dir(char *out, size_t cap)
{
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(out, cap, "%s/natomic-report-XXXXXX", base);
    ck_assert_msg(mkdtemp(out) != NULL, "mkdtemp %s failed", out);
}

/* The whole file as a string (freed by the caller), or NULL. */
static char *slurp(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    size_t got = fread(buf, 1, (size_t)len, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

#define ASSERT_HAS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "missing: %s", (needle))
#define ASSERT_LACKS(hay, needle) ck_assert_msg(strstr((hay), (needle)) == NULL, "unexpected: %s", (needle))
#define ASSERT_BEFORE(hay, first, then)                                                                              \
    ck_assert_msg(strstr((hay), (first)) != NULL && strstr((hay), (then)) != NULL &&                                 \
                      strstr((hay), (first)) < strstr((hay), (then)),                                                \
                  "'%s' must come before '%s'", (first), (then))

/* The story every report test tells: an order whose reservation fails. */
static void order_story(timeline_t *tl)
{
    timeline_add(tl, TL_CALL, "lab", "orders", false, "Place {\"sku\":\"book\",\"qty\":2}");
    timeline_add(tl, TL_CALL, "orders", "inventory", false, "Reserve {\"qty\":2}");
    timeline_add(tl, TL_FAULT, "lab", "inventory", true, "inventory.reserve=error");
    timeline_add(tl, TL_REPLY, "inventory", "orders", true, "OUT_OF_STOCK");
    timeline_add(tl, TL_COMPENSATION, "orders", "payments", false, "Refund o-1");
    timeline_add(tl, TL_REPLY, "payments", "orders", false, "ok");
    timeline_add(tl, TL_EVENT, "orders", "events", false, "order_failed");
    timeline_add(tl, TL_DEAD_LETTER, "orders", "orders", true, "Refund o-2");
    timeline_add(tl, TL_NOTE, "lab", "lab", false, "a<b & \"c\"; #1\nline2");
    timeline_add(tl, TL_RESTART, "lab", "inventory", false, "inventory");
}

static const report_check_t story_checks[] = {
    {.name = "reply is OUT_OF_STOCK", .ok = true, .detail = ""},
    {.name = "stock <conserved>", .ok = false, .detail = "expected 10, got 8 & \"more\""},
};

static report_scenario_t story_scenario(const timeline_t *tl)
{
    return (report_scenario_t){.name = "place",
                               .group = "saga",
                               .about = "Reservation fails. The order is rolled back.",
                               .path = "scenarios/saga/place.yaml",
                               .seed = 42,
                               .replay = "natomic-lab run scenarios/saga/place.yaml --seed 42",
                               .duration_s = 1.25,
                               .checks = story_checks,
                               .n_checks = 2,
                               .timeline = tl,
                               .log_excerpt = "orders: <rollback> started\n"};
}

/* ---- timeline ------------------------------------------------------------ */

START_TEST(timeline_keeps_order_and_cuts_safely)
{
    timeline_t tl;
    timeline_init(&tl);
    char long_label[400];
    memset(long_label, 'x', sizeof long_label - 1);
    long_label[sizeof long_label - 1] = '\0';
    /* 150 two-byte characters: 300 bytes, cut at the 199-byte field. */
    char accents[301] = "";
    for (int i = 0; i < 150; i++)
        strcat(accents, "\xc3\xa9");
    timeline_add(&tl, TL_CALL, "lab", "a-very-long-participant-name-beyond-32-bytes", false, "%s", long_label);
    timeline_add(&tl, TL_NOTE, NULL, NULL, false, "%s", accents);
    timeline_add(&tl, TL_EVENT, "orders", "events", false, "n=%d", 7);
    ck_assert_uint_eq(tl.count, 3);
    ck_assert_uint_eq(tl.dropped, 0);
    ck_assert_uint_eq(strlen(tl.items[0].label), sizeof tl.items[0].label - 1);
    ck_assert_uint_eq(strlen(tl.items[0].to), sizeof tl.items[0].to - 1);
    ck_assert_str_eq(tl.items[1].from, "");
    size_t len = strlen(tl.items[1].label);
    ck_assert_uint_eq(len, 198); /* 99 whole characters, not 99.5 */
    ck_assert_int_eq((unsigned char)tl.items[1].label[len - 2], 0xc3);
    ck_assert_str_eq(tl.items[2].label, "n=7");
    ck_assert_int_eq(tl.items[2].kind, TL_EVENT);
    for (size_t i = 1; i < tl.count; i++)
        ck_assert_int_ge(tl.items[i].t_us, tl.items[i - 1].t_us);
    ck_assert_int_ge(tl.items[0].t_us, 0);
    timeline_free(&tl);
}
END_TEST

START_TEST(timeline_is_bounded)
{
    timeline_t tl;
    timeline_init(&tl);
    for (int i = 0; i < 20005; i++)
        timeline_add(&tl, TL_CALL, "lab", "orders", false, "call %d", i);
    ck_assert_uint_eq(tl.count, 20000);
    ck_assert_uint_eq(tl.dropped, 5);
    ck_assert_str_eq(tl.items[19999].label, "call 19999");
    timeline_free(&tl);
}
END_TEST

static void *add_many(void *arg)
{
    for (int i = 0; i < 1000; i++)
        timeline_add(arg, TL_EVENT, "orders", "events", false, "e%d", i);
    return NULL;
}

START_TEST(timeline_takes_adds_from_threads)
{
    timeline_t tl;
    timeline_init(&tl);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, add_many, &tl), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ck_assert_uint_eq(tl.count, 4000);
    for (size_t i = 1; i < tl.count; i++)
        ck_assert_int_ge(tl.items[i].t_us, tl.items[i - 1].t_us);
    timeline_free(&tl);
}
END_TEST

/* ---- report -------------------------------------------------------------- */

START_TEST(report_writes_every_page)
{
    char tmp[512], dir[600], err[256] = "";
    make_temp_dir(tmp, sizeof tmp);
    snprintf(dir, sizeof dir, "%s/a/b/report", tmp); /* mkdir -p */
    timeline_t tl;
    timeline_init(&tl);
    order_story(&tl);
    report_scenario_t s[2] = {story_scenario(&tl),
                              {.name = "plain", .group = "", .about = "No group.", .replay = "natomic-lab run x"}};
    ck_assert_msg(report_write(dir, s, 2, err, sizeof err) == 0, "report_write: %s", err);
    const char *names[] = {"index.html", "index.md", "saga-place.html", "saga-place.md", "plain.html", "plain.md"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        ck_assert_msg(access(path, R_OK) == 0, "%s was not written", path);
    }
    /* Written again over itself: still fine, nothing temporary left. */
    ck_assert_msg(report_write(dir, s, 2, err, sizeof err) == 0, "report_write: %s", err);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "test -z \"$(find '%s' -name '*.tmp')\"", dir);
    ck_assert_int_eq(system(cmd), 0);
    timeline_free(&tl);
    remove_tree(tmp);
}
END_TEST

START_TEST(markdown_has_escaped_mermaid)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    order_story(&tl);
    report_scenario_t s = story_scenario(&tl);
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *md = slurp(dir, "saga-place.md");
    ck_assert_ptr_nonnull(md);
    ASSERT_HAS(md, "# saga / place");
    ASSERT_HAS(md, "Reservation fails. The order is rolled back.");
    ASSERT_HAS(md, "| Seed | 42 |");
    ASSERT_HAS(md, "natomic-lab run scenarios/saga/place.yaml --seed 42");
    ASSERT_HAS(md, "| Duration | 1.25 s |");
    ASSERT_HAS(md, "| ok | reply is OUT_OF_STOCK |");
    ASSERT_HAS(md, "| **FAIL** | stock &lt;conserved&gt; | expected 10, got 8 &amp; \"more\" |");
    ASSERT_HAS(md, "```mermaid\nsequenceDiagram\n"
                   "    participant lab\n    participant orders\n    participant inventory\n"
                   "    participant payments\n    participant events\n");
    ASSERT_HAS(md, "    lab->>orders: Place {\"sku\":\"book\",\"qty\":2}\n");
    ASSERT_HAS(md, "    orders->>inventory: Reserve {\"qty\":2}\n");
    ASSERT_HAS(md, "Note over inventory: FAULT inventory.reserve=error\n");
    ASSERT_HAS(md, "inventory-->>orders: ERR OUT_OF_STOCK\n");
    ASSERT_HAS(md, "    orders->>payments: undo: Refund o-1\n");
    ASSERT_HAS(md, "    payments-->>orders: ok\n");
    ASSERT_HAS(md, "    orders-)events: order_failed\n");
    ASSERT_HAS(md, "Note over orders: dead letter: Refund o-2\n");
    ASSERT_HAS(md, "    Note over lab: a#lt;b #amp; \"c\"#59; #35;1<br/>line2\n");
    ASSERT_HAS(md, "    rect rgb(227, 242, 253)\n        Note over inventory: RESTART inventory\n    end\n");
    ASSERT_LACKS(md, "heal");
    ASSERT_HAS(md, "orders: <rollback> started");
    /* Every entry is in the diagram once; the block is closed. */
    ck_assert_uint_eq(count_of(md, "->>") + count_of(md, "-)") + count_of(md, "Note over"), 10);
    ck_assert_uint_eq(count_of(md, "```mermaid"), 1);
    ASSERT_LACKS(md, "left out");
    char *index = slurp(dir, "index.md");
    ck_assert_ptr_nonnull(index);
    ASSERT_HAS(index, "[place](saga-place.md)");
    ASSERT_HAS(index, "1 scenario ran: 0 passed, and 1 failed. 1 of 2 checks passed; the stories took 1.2 s in all.");
    ASSERT_HAS(index, "| **FAIL** | saga |");
    free(index);
    free(md);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

START_TEST(html_is_self_contained_and_escaped)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    order_story(&tl);
    report_scenario_t s = story_scenario(&tl);
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *html = slurp(dir, "saga-place.html");
    ck_assert_ptr_nonnull(html);
    ASSERT_HAS(html, "<!DOCTYPE html>");
    ASSERT_HAS(html, "<svg");
    ASSERT_LACKS(html, "<script");
    ASSERT_LACKS(html, "http://");
    ASSERT_LACKS(html, "https://");
    ASSERT_LACKS(html, "<link");
    ASSERT_LACKS(html, "@import");
    ASSERT_HAS(html, "a&lt;b &amp; &quot;c&quot;; #1 line2");
    ASSERT_LACKS(html, "a<b");
    ASSERT_HAS(html, "<code>natomic-lab run scenarios/saga/place.yaml --seed 42</code>");
    ASSERT_HAS(html, "<tr class=\"fail\"><td class=\"res\">FAIL</td><td>stock &lt;conserved&gt;</td>");
    ASSERT_HAS(html, "expected 10, got 8 &amp; &quot;more&quot;");
    ASSERT_HAS(html, "<tr class=\"ok\"><td class=\"res\">ok</td><td>reply is OUT_OF_STOCK</td>");
    ASSERT_HAS(html, "orders: &lt;rollback&gt; started");
    /* The drawing: one arrow per call, reply, compensation, event; boxes for the rest. */
    ck_assert_uint_eq(count_of(html, "<line class=\""), 6);
    ck_assert_uint_eq(count_of(html, "class=\"err dash\""), 1);
    ck_assert_uint_eq(count_of(html, "class=\"comp\""), 1);
    ck_assert_uint_eq(count_of(html, "class=\"evt\""), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-fault\">"), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-restart\">"), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-heal\">"), 0);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-dead\">"), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-note\">"), 1);
    ASSERT_HAS(html, "FAULT inventory.reserve=error");
    ASSERT_HAS(html, "undo: Refund o-1");
    ASSERT_HAS(html, "ERR OUT_OF_STOCK");
    char *index = slurp(dir, "index.html");
    ck_assert_ptr_nonnull(index);
    ASSERT_HAS(index, "<a href=\"saga-place.html\">place</a>");
    ASSERT_HAS(index, "<tr class=\"fail\">");
    ASSERT_HAS(index, "Reservation fails.");
    ASSERT_LACKS(index, "rolled back"); /* the first sentence only */
    ASSERT_LACKS(index, "<script");
    ASSERT_LACKS(index, "http://");
    ASSERT_LACKS(index, "https://");
    free(index);
    free(html);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

START_TEST(long_timeline_is_capped_keeping_faults)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    for (int i = 0; i < 2000; i++) {
        timeline_add(&tl, TL_CALL, "lab", "orders", false, "Place o-%d", i);
        if (i == 700 || i == 1500 || i == 1999)
            timeline_add(&tl, TL_FAULT, "lab", "inventory", true, "kill-%d", i);
        if (i == 1200 || i == 1800)
            timeline_add(&tl, TL_COMPENSATION, "orders", "inventory", false, "Release o-%d", i);
        if (i == 1900)
            timeline_add(&tl, TL_RECOVERY, "orders", "orders", false, "orders-1 ended c-%d: outcome compensated", i);
    }
    report_scenario_t s = {.name = "many", .group = "load", .about = "Many orders.", .replay = "x",
                           .timeline = &tl};
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *md = slurp(dir, "load-many.md");
    char *html = slurp(dir, "load-many.html");
    ck_assert_ptr_nonnull(md);
    ck_assert_ptr_nonnull(html);
    const char *kept[] = {"FAULT kill-700", "FAULT kill-1500", "FAULT kill-1999", "undo: Release o-1200",
                          "undo: Release o-1800", "RECOVERY orders-1 ended c-1900"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        ASSERT_HAS(md, kept[i]);
        ASSERT_HAS(html, kept[i]);
    }
    size_t arrows = count_of(md, "lab->>orders: Place");
    ck_assert_uint_eq(arrows, 400 - 6);
    ASSERT_HAS(md, "lab->>orders: Place o-0\n");
    ASSERT_LACKS(md, "Place o-1999\n");
    ASSERT_HAS(md, "showing 400 of 2006 entries");
    ASSERT_HAS(md, "entries left out");
    ASSERT_HAS(html, "Showing 400 of 2006 entries");
    ASSERT_HAS(html, "entries not shown");
    ck_assert_uint_eq(count_of(html, "<line class=\"call\""), 400 - 6);
    free(md);
    free(html);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

/* A durable story: orders died after the charge, was restarted, and recovered its saga. */
static void recovery_story(timeline_t *tl)
{
    timeline_add(tl, TL_CALL, "lab", "orders", false, "create_order {\"customer\":\"ann\"}");
    timeline_add(tl, TL_RESTART, "lab", "orders", false, "orders");
    timeline_add(tl, TL_RECOVERY, "orders", "orders", false,
                 "orders-0 claimed 67769bdc: from orders-0 (incarnation ed58d039), orders.create_order, "
                 "3 compensations pending");
    timeline_add(tl, TL_COMPENSATION, "orders", "payments", false, "refund {\"order_id\":\"ord-1\"}");
    timeline_add(tl, TL_RECOVERY, "orders", "orders", false,
                 "orders-0 compensated 67769bdc: call payments.refund: done");
    timeline_add(tl, TL_RECOVERY, "orders", "orders", true,
                 "orders-0 compensated 67769bdc: call inventory.release: dead-lettered");
    timeline_add(tl, TL_RECOVERY, "orders", "orders", true,
                 "orders-0 ended 67769bdc: outcome incomplete: 2 compensations done, 1 dead-lettered, in 10 ms");
}

static const report_recovery_t story_recoveries[] = {
    {.t_us = 812300, .event = "claimed", .service = "orders", .instance = "orders-0",
     .call_id = "67769bdc56b1f790b50c5393c8481d7c", .tx = "b7cd1de3e82a5e50a307f8747cc483ea",
     .detail = "from orders-0 (incarnation ed58d039), orders.create_order, 3 compensations pending"},
    {.t_us = 815000, .event = "compensated", .service = "orders", .instance = "orders-0",
     .call_id = "67769bdc56b1f790b50c5393c8481d7c", .tx = "b7cd1de3e82a5e50a307f8747cc483ea",
     .detail = "call payments.refund: done"},
    {.t_us = 817000, .event = "compensated", .service = "orders", .instance = "orders-0",
     .call_id = "67769bdc56b1f790b50c5393c8481d7c", .tx = "b7cd1de3e82a5e50a307f8747cc483ea",
     .detail = "call inventory.release: dead-lettered"},
    {.t_us = 843700, .event = "ended", .service = "orders", .instance = "orders-0",
     .call_id = "67769bdc56b1f790b50c5393c8481d7c", .tx = "b7cd1de3e82a5e50a307f8747cc483ea",
     .detail = "outcome incomplete: 2 compensations done, 1 dead-lettered, in 10 ms"},
    {.t_us = 900000, .event = "ended", .service = "orders", .instance = "orders-1",
     .call_id = "0123456789abcdef0123456789abcdef", .tx = "fedcba9876543210fedcba9876543210",
     .detail = "outcome compensated: 3 compensations done, 0 dead-lettered, in 4 ms"},
};

START_TEST(recovery_is_drawn_and_told)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl, plain_tl;
    timeline_init(&tl);
    timeline_init(&plain_tl);
    recovery_story(&tl);
    order_story(&plain_tl);
    report_scenario_t s[3] = {
        {.name = "crash-after-charge",
         .group = "recovery",
         .about = "orders dies after the charge; restarted, it recovers the saga.",
         .replay = "natomic-lab run x.yaml --seed 1",
         .timeline = &tl,
         .durable = true,
         .recoveries = story_recoveries,
         .n_recoveries = sizeof story_recoveries / sizeof story_recoveries[0],
         .has_recovery_ms = true,
         .recovery_ms = 31.4,
         .recovery_restart = "orders"},
        story_scenario(&plain_tl), /* memory mode: no Recovery section */
        {.name = "calm", .group = "recovery", .about = "Nothing dies.", .replay = "x", .durable = true},
    };
    ck_assert_msg(report_write(dir, s, 3, err, sizeof err) == 0, "report_write: %s", err);

    char *html = slurp(dir, "recovery-crash-after-charge.html");
    ck_assert_ptr_nonnull(html);
    ASSERT_HAS(html, "<dt>Mode</dt><dd>durable</dd>");
    ASSERT_HAS(html, "<dt>Recovery</dt><dd>31.4 ms after the restart of orders</dd>");
    ASSERT_HAS(html, "<h2>Recovery</h2>");
    ASSERT_HAS(html, "2 sagas ended by recovery: 1 compensated, 1 incomplete; 0 found already committed "
                     "(nothing to undo). The first saga ended 31.4 ms after the restart of orders.");
    /* Who claimed which call from whom, when; each compensation; how it ended. */
    ASSERT_HAS(html, "<tr class=\"step\"><td class=\"when mono\">812.3</td><td>orders-0</td><td>claimed</td>"
                     "<td class=\"mono\" title=\"tx b7cd1de3e82a5e50a307f8747cc483ea\">"
                     "67769bdc56b1f790b50c5393c8481d7c</td>"
                     "<td>from orders-0 (incarnation ed58d039), orders.create_order, 3 compensations pending</td>"
                     "</tr>");
    ASSERT_HAS(html, "<td>compensated</td>");
    ASSERT_HAS(html, "<td>call payments.refund: done</td>");
    ASSERT_HAS(html, "<tr class=\"bad\"><td class=\"when mono\">817.0</td>");
    ASSERT_HAS(html, "<tr class=\"bad\"><td class=\"when mono\">843.7</td><td>orders-0</td><td>ended</td>");
    ASSERT_HAS(html, "<tr class=\"ended\"><td class=\"when mono\">900.0</td><td>orders-1</td><td>ended</td>");
    ck_assert_uint_eq(count_of(html, "<tr class=\""), 5);
    /* The section comes between the checks and the diagram. */
    ASSERT_BEFORE(html, "<h2>Checks</h2>", "<h2>Recovery</h2>");
    ASSERT_BEFORE(html, "<h2>Recovery</h2>", "<h2>Sequence</h2>");
    /* In the diagram: teal boxes on the recovering service's lifeline, one per step, and a legend entry. */
    ck_assert_uint_eq(count_of(html, "<g class=\"b-recov\">"), 2);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-recov bad\">"), 2);
    ASSERT_HAS(html, "<i class=\"bx recov\"></i>recovery</span>");
    ASSERT_HAS(html, "RECOVERY orders-0 claimed 67769bdc");

    char *md = slurp(dir, "recovery-crash-after-charge.md");
    ck_assert_ptr_nonnull(md);
    ASSERT_HAS(md, "| Mode | durable |\n| Recovery | 31.4 ms after the restart of orders |\n");
    ASSERT_HAS(md, "\n## Recovery\n\n2 sagas ended by recovery: 1 compensated, 1 incomplete;");
    ASSERT_HAS(md, "| Time (ms) | Instance | Step | Call | What happened |\n");
    ASSERT_HAS(md, "| 812.3 | orders-0 | claimed | 67769bdc56b1f790b50c5393c8481d7c | from orders-0 (incarnation "
                   "ed58d039), orders.create_order, 3 compensations pending |\n");
    ASSERT_HAS(md, "| 843.7 | orders-0 | **ended** | 67769bdc56b1f790b50c5393c8481d7c | outcome incomplete: ");
    ASSERT_HAS(md, "    rect rgb(214, 240, 237)\n        Note over orders: RECOVERY orders-0 claimed 67769bdc");
    ASSERT_HAS(md, "    rect rgb(255, 236, 214)\n        Note over orders: RECOVERY orders-0 ended 67769bdc: "
                   "outcome incomplete");
    ck_assert_uint_eq(count_of(md, "Note over orders: RECOVERY"), 4);
    ASSERT_BEFORE(md, "## Recovery", "## Sequence");

    /* A memory story has no Recovery section; a calm durable one says nothing was recovered. */
    char *plain_html = slurp(dir, "saga-place.html"), *plain_md = slurp(dir, "saga-place.md");
    ck_assert_ptr_nonnull(plain_html);
    ck_assert_ptr_nonnull(plain_md);
    ASSERT_LACKS(plain_html, "<h2>Recovery</h2>");
    ASSERT_LACKS(plain_md, "## Recovery");
    ASSERT_HAS(plain_html, "<dt>Mode</dt><dd>memory</dd>");
    ASSERT_LACKS(plain_html, "<dt>Recovery</dt>");
    char *calm = slurp(dir, "recovery-calm.html");
    ck_assert_ptr_nonnull(calm);
    ASSERT_HAS(calm, "<h2>Recovery</h2>\n<p class=\"recov-sum\">Nothing was recovered: no instance left a saga "
                     "unfinished.</p>");
    ASSERT_LACKS(calm, "<table class=\"recovery\">");

    /* The summary: the mode of each story, and the recovery time where there is one. */
    char *index = slurp(dir, "index.html"), *index_md = slurp(dir, "index.md");
    ck_assert_ptr_nonnull(index);
    ck_assert_ptr_nonnull(index_md);
    ASSERT_HAS(index, "<th>Mode</th>");
    ASSERT_HAS(index, "<td class=\"mode\">durable<br><span class=\"note\">recovery 31.4 ms after the restart of "
                      "orders</span></td>");
    ASSERT_HAS(index, "<td class=\"mode\">memory</td>");
    ASSERT_HAS(index, "<td class=\"mode\">durable</td>");
    ASSERT_HAS(index_md, "| Result | Group | Scenario | About | Expected violation | Checks | Duration | Mode | Seed |\n");
    ASSERT_HAS(index_md, " | durable<br>recovery 31.4 ms after the restart of orders | 0 |\n");
    ASSERT_HAS(index_md, " | memory | 42 |\n");
    free(index);
    free(index_md);
    free(calm);
    free(plain_html);
    free(plain_md);
    free(md);
    free(html);
    timeline_free(&tl);
    timeline_free(&plain_tl);
    remove_tree(dir);
}
END_TEST

/* ---- the report tells the truth -------------------------------------------- */

START_TEST(timeline_merges_by_source_time)
{
    timeline_t tl;
    timeline_init(&tl);
    int64_t t0 = tl.start_ns - 1000000000; /* a second before the timeline began: negative times */
    /* They reach the lab out of order: a reply before its call, an event before both. */
    timeline_add_at(&tl, t0 + 3000000, TL_EVENT, "orders", "events", false, "order_created");
    timeline_add_at(&tl, t0 + 2000000, TL_REPLY, "inventory", "orders", false, "ok");
    timeline_add_at(&tl, t0 + 1000000, TL_CALL, "orders", "inventory", false, "reserve");
    timeline_add_at(&tl, t0 + 2000000, TL_FIRED, "inventory", "inventory", true, "drop at natomic/before_reply");
    ck_assert_uint_eq(tl.count, 4);
    ck_assert_str_eq(tl.items[0].label, "reserve");
    ck_assert_str_eq(tl.items[1].label, "ok");
    ck_assert_str_eq(tl.items[2].label, "drop at natomic/before_reply"); /* same time: in the order added */
    ck_assert_str_eq(tl.items[3].label, "order_created");
    ck_assert_int_eq(tl.items[0].t_us, -999000);
    ck_assert_int_eq(tl.items[3].t_us, -997000);
    ck_assert_int_eq(timeline_us_at(&tl, tl.start_ns - 1500), -2);
    /* The lab's own entry, now, goes after all of them. */
    timeline_add(&tl, TL_NOTE, "lab", "lab", false, "now");
    ck_assert_str_eq(tl.items[4].label, "now");
    for (size_t i = 1; i < tl.count; i++)
        ck_assert_int_ge(tl.items[i].t_us, tl.items[i - 1].t_us);
    /* The story starts later than the timeline was made: times count from there, moments kept. */
    int64_t before = tl.start_ns;
    timeline_start(&tl);
    int64_t shift = (tl.start_ns - before) / 1000;
    ck_assert_int_ge(shift, 0);
    ck_assert_int_eq(tl.items[0].t_us, -999000 - shift);
    ck_assert_int_eq(timeline_us_at(&tl, t0 + 1000000), tl.items[0].t_us);
    timeline_free(&tl);
}
END_TEST

START_TEST(fired_faults_and_timeouts_are_marks)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    timeline_add(&tl, TL_ARM, "lab", "orders", false, "orders/create_order/after_reserve=crash@1");
    timeline_add(&tl, TL_CALL, "lab", "orders", false, "create_order {}");
    timeline_add(&tl, TL_FIRED, "orders", "orders", true, "crash at orders/create_order/after_reserve (orders-0, hit 1)");
    timeline_add(&tl, TL_FIRED, "inventory", "inventory", true, "delay 200 ms at natomic/before_handler (inventory-0, hit 3)");
    timeline_add(&tl, TL_TIMEOUT, "lab", "lab", false, "orders.create_order: no reply in 1000 ms (tx 0123abcd)");
    report_scenario_t s = {.name = "crash", .group = "orch", .about = "It dies.", .replay = "x", .timeline = &tl};
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *html = slurp(dir, "orch-crash.html"), *md = slurp(dir, "orch-crash.md");
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(md);
    /* A fired fault is its own mark: a box with a burst, on the lane where it fired. */
    ck_assert_uint_eq(count_of(html, "<g class=\"b-fired\"><rect"), 2 + 1); /* and one in the legend */
    ck_assert_uint_eq(count_of(html, "<polygon class=\"burst\""), 2 + 1); /* and one in the legend */
    ASSERT_HAS(html, "FIRED crash at orders/create_order/after_reserve (orders-0, hit 1)");
    ASSERT_HAS(html, "FIRED delay 200 ms at natomic/before_handler (inventory-0, hit 3)");
    ASSERT_HAS(html, " ms  orders: FIRED crash at");
    ASSERT_HAS(html, "ms  inventory: FIRED delay 200 ms");
    /* The lab's timeout, on the lab's lane, in its own colour; the rule that armed the fault apart. */
    ck_assert_uint_eq(count_of(html, "<g class=\"b-timeout\">"), 1);
    ASSERT_HAS(html, "ms  lab: TIMEOUT orders.create_order: no reply in 1000 ms");
    ck_assert_uint_eq(count_of(html, "<g class=\"b-arm\">"), 1);
    ASSERT_HAS(html, "ARM orders/create_order/after_reserve=crash@1");
    ck_assert_uint_eq(count_of(html, "<g class=\"b-fault\">"), 0);
    ASSERT_HAS(html, "FIRED: a fault point fired in the service</span>");
    ASSERT_HAS(html, "<i class=\"bx timeout\"></i>TIMEOUT: the lab gave up on a call</span>");
    /* The Markdown tells the same, each in its band. */
    ASSERT_HAS(md, "    rect rgb(255, 205, 210)\n        Note over orders: FIRED crash at "
                   "orders/create_order/after_reserve (orders-0, hit 1)\n    end\n");
    ASSERT_HAS(md, "    rect rgb(255, 236, 179)\n        Note over lab: TIMEOUT orders.create_order: no reply in "
                   "1000 ms (tx 0123abcd)\n    end\n");
    ASSERT_HAS(md, "    Note over orders: ARM orders/create_order/after_reserve=crash@1\n");
    free(md);
    free(html);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

START_TEST(restart_release_heal_are_not_one_thing)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    timeline_add(&tl, TL_FAULT, "lab", "inventory", true, "pause (SIGSTOP)");
    timeline_add(&tl, TL_RESUME, "lab", "inventory", false, "(SIGCONT)");
    timeline_add(&tl, TL_FAULT, "lab", "payments", true, "connection cut");
    timeline_add(&tl, TL_HEAL, "lab", "payments", false, "link back to normal (the proxy passes again)");
    timeline_add(&tl, TL_ARM, "lab", "orders", false, "natomic/before_handler=pause");
    timeline_add(&tl, TL_RELEASE, "lab", "orders", false, "natomic/before_handler");
    timeline_add(&tl, TL_FAULT, "lab", "orders", true, "kill -9 on orders-0");
    timeline_add(&tl, TL_RESTART, "lab", "orders", false, "orders-0");
    report_scenario_t s = {.name = "ends", .group = "net", .about = "Faults end.", .replay = "x", .timeline = &tl};
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *html = slurp(dir, "net-ends.html"), *md = slurp(dir, "net-ends.md");
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(md);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-fault\">"), 3);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-restart\">"), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-resume\">"), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-release\">"), 1);
    ck_assert_uint_eq(count_of(html, "<g class=\"b-heal\">"), 1);
    ASSERT_HAS(html, ">RESTART orders-0</text>");
    ASSERT_HAS(html, ">RESUME (SIGCONT)</text>");
    ASSERT_HAS(html, ">RELEASE natomic/before_handler</text>");
    ASSERT_HAS(html, ">HEAL link back to normal (the proxy passes again)</text>");
    ASSERT_LACKS(html, "heal:");
    /* Each its own colour, and its own line in the legend. */
    const char *css[] = {"svg .b-restart rect{fill:#e3f2fd", "svg .b-release rect{fill:#efebe9",
                         "svg .b-heal rect{fill:#e8f5e9", "<i class=\"bx restart\"></i>RESTART</span>",
                         "<i class=\"bx release\"></i>RELEASE: a fault point disabled</span>",
                         "<i class=\"bx heal\"></i>HEAL: a link back to normal</span>"};
    for (size_t i = 0; i < sizeof css / sizeof css[0]; i++)
        ASSERT_HAS(html, css[i]);
    ASSERT_HAS(md, "    rect rgb(227, 242, 253)\n        Note over orders: RESTART orders-0\n");
    ASSERT_HAS(md, "    rect rgb(239, 235, 233)\n        Note over orders: RELEASE natomic/before_handler\n");
    ASSERT_HAS(md, "    rect rgb(232, 245, 233)\n        Note over payments: HEAL link back to normal");
    ASSERT_HAS(md, "    rect rgb(227, 242, 253)\n        Note over inventory: RESUME (SIGCONT)\n");
    free(md);
    free(html);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

/* Every <text> of the drawing, joined by spaces: what a reader sees of it. */
static char *svg_texts(const char *html)
{
    const char *svg = strstr(html, "aria-label=\"sequence diagram\"");
    ck_assert_ptr_nonnull(svg);
    char *out = calloc(1, strlen(svg) + 1);
    ck_assert_ptr_nonnull(out);
    for (const char *p = strstr(svg, "<text"); p != NULL; p = strstr(p, "<text")) {
        const char *open = strchr(p, '>'), *close = strstr(p, "</text>");
        if (open == NULL || close == NULL)
            break;
        if (out[0] != '\0')
            strcat(out, " ");
        strncat(out, open + 1, (size_t)(close - open - 1));
        p = close;
    }
    return out;
}

START_TEST(long_labels_wrap_and_keep_their_key_fields)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    /* Neighbouring lanes, labels far longer than the room between them, the key field at the end. */
    timeline_add(&tl, TL_CALL, "orders", "inventory", false,
                 "reserve {\"order_id\":\"ord-71ea5a34d07bff9fee41c51f88c94604\",\"sku\":\"book\",\"qty\":2,"
                 "\"note\":\"a long note that goes on and on\",\"status\":\"confirmed\"}");
    timeline_add(&tl, TL_REPLY, "inventory", "orders", true,
                 "422 PaymentDeclinedBecauseTheBalanceIsTooLowForThisOrder (rollback incomplete, replayed)");
    timeline_add(&tl, TL_RECOVERY, "orders", "orders", true,
                 "orders-0 ended 67769bdc: outcome incomplete: 2 compensations done, 1 dead-lettered, in 10 ms, "
                 "after a long and winding road through every participant");
    report_scenario_t s = {.name = "long", .group = "", .about = "Long.", .replay = "x", .timeline = &tl};
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *html = slurp(dir, "long.html"), *md = slurp(dir, "long.md");
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(md);
    char *texts = svg_texts(html);
    ASSERT_LACKS(texts, "&#8230;"); /* no ellipsis: nothing cut */
    ASSERT_HAS(texts, "&quot;status&quot;:&quot;confirmed&quot;}");
    ASSERT_HAS(texts, "(rollback incomplete, replayed)");
    ASSERT_HAS(texts, "ERR 422");
    ASSERT_HAS(texts, "PaymentDeclinedBecause");
    ASSERT_HAS(texts, "every participant");
    /* Wrapped: the error reply's lines are separate <text>s, one after the other. */
    ck_assert_uint_ge(count_of(html, "<text class=\"al err\""), 2);
    ck_assert_uint_ge(count_of(html, "<text class=\"al call\""), 3);
    /* The Markdown keeps every character too, on lines of its own. */
    ASSERT_HAS(md, "\"status\":\"confirmed\"}\n");
    ASSERT_HAS(md, "inventory-->>orders: ERR 422 PaymentDeclinedBecauseTheBalanceIsTooLowForThisOrder (rollback");
    ASSERT_HAS(md, "incomplete, replayed)\n");
    ASSERT_HAS(md, "<br/>");
    ASSERT_LACKS(md, "...");
    free(texts);
    free(md);
    free(html);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

START_TEST(diagram_fits_the_page_and_scrolls)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    timeline_t tl;
    timeline_init(&tl);
    order_story(&tl);
    report_scenario_t s = story_scenario(&tl);
    ck_assert_msg(report_write(dir, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *html = slurp(dir, "saga-place.html");
    ck_assert_ptr_nonnull(html);
    /* The frame is never wider than the page, scrolls both ways, and the drawings scale with it. */
    ASSERT_HAS(html, ".seq{width:100%;max-height:85vh;overflow:auto;");
    ASSERT_HAS(html, ".seq svg{display:block;width:100%;height:auto}");
    const char *frame = strstr(html, "<div class=\"seq\" style=\"max-width:min(100%,");
    ck_assert_ptr_nonnull(frame);
    double frame_w = atof(frame + strlen("<div class=\"seq\" style=\"max-width:min(100%,"));
    const char *svg = strstr(html, "aria-label=\"sequence diagram\"");
    ck_assert_ptr_nonnull(svg);
    const char *width = strstr(html, "<svg width=\""), *min = NULL;
    ck_assert_ptr_nonnull(width);
    double w = atof(width + strlen("<svg width=\""));
    ck_assert_msg(frame_w == w + 2, "frame %f, drawing %f", frame_w, w);
    /* Both drawings (names, story) may shrink to 80 %, no more: then the frame scrolls. */
    char want[64];
    snprintf(want, sizeof want, "style=\"min-width:%.0fpx\"", w * 0.8);
    ck_assert_uint_eq(count_of(html, want), 2);
    min = strstr(html, want);
    ck_assert_ptr_nonnull(min);
    free(html);
    timeline_free(&tl);
    remove_tree(dir);
}
END_TEST

static const report_check_t lesson_checks[] = {
    {.name = "state orders.pending = 1", .ok = true},
    {.name = "invariant order_atomicity is violated, as this story teaches", .ok = true},
};

static const report_check_t failed_lesson_checks[] = {
    {.name = "invariant order_atomicity is violated, as this story teaches", .ok = false, .detail = "it held"},
};

static char *const lesson_violations[] = {"order_atomicity", "no_pending_orders"};

START_TEST(index_tells_expected_violations_apart)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    report_scenario_t s[3] = {
        {.name = "clean", .group = "g", .about = "Nothing breaks.", .replay = "x", .checks = lesson_checks,
         .n_checks = 1},
        {.name = "lesson", .group = "g", .about = "The saga is not atomic.", .replay = "x", .checks = lesson_checks,
         .n_checks = 2, .violations = lesson_violations, .n_violations = 2},
        {.name = "missed", .group = "g", .about = "It should break.", .replay = "x", .checks = failed_lesson_checks,
         .n_checks = 1, .violations = lesson_violations, .n_violations = 1},
    };
    ck_assert_msg(report_write(dir, s, 3, err, sizeof err) == 0, "report_write: %s", err);
    char *index = slurp(dir, "index.html"), *index_md = slurp(dir, "index.md");
    char *page = slurp(dir, "g-lesson.html"), *page_md = slurp(dir, "g-lesson.md");
    ck_assert_ptr_nonnull(index);
    ck_assert_ptr_nonnull(index_md);
    ck_assert_ptr_nonnull(page);
    ck_assert_ptr_nonnull(page_md);
    /* A state of its own, with its colour, a tile and a column. */
    ASSERT_HAS(index, "<th>Expected violation</th>");
    ASSERT_HAS(index, "<tr class=\"ok\"><td class=\"res\">ok</td><td>g</td><td><a href=\"g-clean.html\">");
    ASSERT_HAS(index, "<tr class=\"xv\"><td class=\"res\">expected violation</td><td>g</td>"
                      "<td><a href=\"g-lesson.html\">");
    ASSERT_HAS(index, "<td class=\"xv\">order_atomicity and no_pending_orders</td>");
    ASSERT_HAS(index, "<tr class=\"fail\"><td class=\"res\">FAIL</td><td>g</td><td><a href=\"g-missed.html\">");
    ASSERT_HAS(index, "tr.xv{background:var(--xvbg)}");
    ASSERT_HAS(index, "<div class=\"tile xv\"><b>1</b>expected violation</div>");
    ASSERT_HAS(index, "<div class=\"tile ok\"><b>1</b>passed</div>");
    ASSERT_HAS(index, "<p class=\"run-sum\">3 scenarios ran: 1 passed, 1 showed the violation it expects, and 1 "
                      "failed. 3 of 4 checks passed; the stories took 0.0 s in all.</p>");
    ASSERT_HAS(index_md, "| **expected violation** | g | [lesson](g-lesson.md) | The saga is not atomic. | "
                         "order_atomicity and no_pending_orders | 2 passed, 0 failed |");
    ASSERT_HAS(index_md, "| **FAIL** | g | [missed](g-missed.md) | It should break. | order_atomicity | ");
    ASSERT_HAS(index_md, "| ok | g | [clean](g-clean.md) | Nothing breaks. |  | 1 passed, 0 failed |");
    /* The story's page: its badge, and a sentence that says what it teaches. */
    ASSERT_HAS(page, "<span class=\"badge xv\">EXPECTED VIOLATION</span>");
    ASSERT_HAS(page, "<p class=\"xv-sum\">This story is a lesson: it expects order_atomicity and no_pending_orders "
                     "to break, and they did; every check passed.</p>");
    ASSERT_HAS(page, "<dt>Expected violation</dt><dd><code>order_atomicity and no_pending_orders</code></dd>");
    ASSERT_HAS(page_md, "**EXPECTED VIOLATION**: 2 of 2 checks passed.\n");
    ASSERT_HAS(page_md, "| Expected violation | order_atomicity and no_pending_orders |\n");
    char *missed = slurp(dir, "g-missed.html");
    ck_assert_ptr_nonnull(missed);
    ASSERT_HAS(missed, "<span class=\"badge fail\">FAIL</span>");
    ASSERT_LACKS(missed, "xv-sum\">");
    free(missed);
    free(page);
    free(page_md);
    free(index);
    free(index_md);
    remove_tree(dir);
}
END_TEST

START_TEST(summaries_are_whole_sentences)
{
    char dir[512], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    const char *long_about =
        "A compensation that succeeded is reported failed (natomic/after_rollback=error once in orders), so it is "
        "retried: the release reaches inventory twice, the barrier skips the second, and the retry policy ends "
        "with a complete rollback and no dead letter. A second sentence.";
    report_scenario_t s[3] = {
        {.name = "long", .about = long_about, .replay = "x"},
        {.name = "abbrev", .about = "Faults at a point, e.g. natomic/before_reply, fire once. Then none.",
         .replay = "x"},
        {.name = "phrase", .about = "A phrase without a full stop\n\nand a second paragraph.", .replay = "x"},
    };
    ck_assert_msg(report_write(dir, s, 3, err, sizeof err) == 0, "report_write: %s", err);
    char *index = slurp(dir, "index.html"), *index_md = slurp(dir, "index.md");
    ck_assert_ptr_nonnull(index);
    ck_assert_ptr_nonnull(index_md);
    ASSERT_HAS(index, "and the retry policy ends with a complete rollback and no dead letter.</td>");
    ASSERT_HAS(index_md, "and the retry policy ends with a complete rollback and no dead letter. |");
    ASSERT_LACKS(index, "A second sentence");
    ASSERT_LACKS(index, "&#8230;");
    ASSERT_HAS(index, "Faults at a point, e.g. natomic/before_reply, fire once.</td>");
    ASSERT_HAS(index, "A phrase without a full stop.</td>");
    ASSERT_HAS(index_md, "# natomic lab report\n\n3 scenarios ran: 3 passed, and 0 failed. 0 of 0 checks passed; "
                         "the stories took 0.0 s in all.\n");
    free(index);
    free(index_md);
    remove_tree(dir);
}
END_TEST

START_TEST(unwritable_folder_is_an_error)
{
    char dir[512], file[600], under[700], err[256] = "";
    make_temp_dir(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/plain-file", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(under, sizeof under, "%s/report", file);
    report_scenario_t s = {.name = "x", .replay = "x"};
    ck_assert_int_eq(report_write(under, &s, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "plain-file") != NULL, "the error names the path: %s", err);
    ck_assert_int_eq(report_write(file, &s, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a folder") != NULL, "err: %s", err);
    /* An empty run and a scenario without a timeline still make pages. */
    snprintf(under, sizeof under, "%s/empty", dir);
    ck_assert_msg(report_write(under, &s, 1, err, sizeof err) == 0, "report_write: %s", err);
    char *html = slurp(under, "x.html");
    ck_assert_ptr_nonnull(html);
    ASSERT_HAS(html, "nothing was recorded");
    free(html);
    ck_assert_msg(report_write(under, NULL, 0, err, sizeof err) == 0, "report_write: %s", err);
    remove_tree(dir);
}
END_TEST

static Suite *report_suite(void)
{
    Suite *s = suite_create("report");
    TCase *t = tcase_create("timeline");
    tcase_add_test(t, timeline_keeps_order_and_cuts_safely);
    tcase_add_test(t, timeline_is_bounded);
    tcase_add_test(t, timeline_takes_adds_from_threads);
    tcase_add_test(t, timeline_merges_by_source_time);
    suite_add_tcase(s, t);
    TCase *r = tcase_create("report");
    tcase_add_test(r, report_writes_every_page);
    tcase_add_test(r, markdown_has_escaped_mermaid);
    tcase_add_test(r, html_is_self_contained_and_escaped);
    tcase_add_test(r, long_timeline_is_capped_keeping_faults);
    tcase_add_test(r, recovery_is_drawn_and_told);
    tcase_add_test(r, fired_faults_and_timeouts_are_marks);
    tcase_add_test(r, restart_release_heal_are_not_one_thing);
    tcase_add_test(r, long_labels_wrap_and_keep_their_key_fields);
    tcase_add_test(r, diagram_fits_the_page_and_scrolls);
    tcase_add_test(r, index_tells_expected_violations_apart);
    tcase_add_test(r, summaries_are_whole_sentences);
    tcase_add_test(r, unwritable_folder_is_an_error);
    suite_add_tcase(s, r);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(report_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0;
}
