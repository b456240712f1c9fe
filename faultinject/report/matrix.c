/*
 * matrix.c -- the explorer's matrix page (matrix.h).
 *
 * Layout. Per story: a title, its file, what it teaches, the notes; tiles
 * counting the cells of each mode by verdict; then one table. Its first
 * header row names the actions, each spanning one column per mode; the
 * second names the modes. Each body row is one hit of one point in one
 * instance (`orders-0 | natomic/client_send | 2`), rows of one instance
 * banded alike. A cell is a link to its replay's page, coloured by
 * verdict, with the verdict as its text ("ok", "lesson", "FAIL") and what
 * broke as its tooltip; a dash where nothing was explored (the point
 * defines no such action, or that mode never hit the point there). Under
 * the table the lessons (what, which invariants, how many cells, why)
 * and the violations, each linked.
 *
 * Everything recorded is escaped for HTML; invalid UTF-8 is left to the
 * browser's replacement (the texts come from the lab's own files and the
 * story). The page is written to a temporary name in the same folder and
 * renamed over the old one, so a reader never sees half of it.
 */
#include "matrix.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char page_css[] =
    "body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif;margin:24px 32px;"
    "color:#1f2328;background:#fff}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #d0d7de;"
    "padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}\n"
    "code,.mono{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px}\n"
    ".about{color:#444;max-width:1100px}.note{color:#57606a}\n"
    ".badge{display:inline-block;padding:2px 10px;border-radius:12px;background:#1a7f37;color:#fff;"
    "font-size:13px;margin-right:10px;vertical-align:3px}.badge.fail{background:#cf222e}\n"
    ".tiles{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}.tile.mode{background:#f6f8fa}\n"
    ".tile{border:1px solid #d0d7de;border-radius:8px;padding:8px 14px;min-width:120px}"
    ".tile b{display:block;font-size:20px}.tile.ok b{color:#1a7f37}.tile.exp b{color:#9a6700}"
    ".tile.fail b{color:#cf222e}\n"
    ".legend span{display:inline-block;margin-right:16px}.legend i{display:inline-block;min-width:26px;padding:1px 6px;"
    "text-align:center;border-radius:4px;font-style:normal;font-size:12px;margin-right:5px}\n"
    "table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:3px 7px}"
    "th{background:#f6f8fa;font-weight:600}\n"
    "table.matrix td.c{padding:0;text-align:center;width:52px}table.matrix td.c a,table.matrix td.c span"
    "{display:block;padding:3px 0;text-decoration:none;font-size:12px}\n"
    "table.matrix th.act{text-align:center}table.matrix th.mode{font-weight:400;font-size:12px}\n"
    "table.matrix tr.b1 td.k{background:#f6f8fa}table.matrix td.k{white-space:nowrap}\n"
    ".v-ok{background:#dafbe1;color:#116329}.v-exp{background:#fff1c2;color:#7d4e00}"
    ".v-fail{background:#cf222e;color:#fff;font-weight:700}.v-none{color:#8c959f}"
    ".v-notrun{background:#eaeef2;color:#57606a}\n"
    "table.matrix td.c a:hover{outline:2px solid #0969da}\n"
    "table.list td{vertical-align:top}table.list td.why{max-width:720px}\n";

typedef struct text {
    char *p;
    size_t len, cap;
    bool oom;
} text_t;

static void put(text_t *t, const char *s, size_t n)
{
    if (t->oom)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (t->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (p == NULL) {
            t->oom = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(text_t *t, const char *s)
{
    put(t, s, strlen(s));
}

static void printf_(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(text_t *t, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Text into HTML (element content and quoted attributes alike). */
static void esc(text_t *t, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '<':
            puts_(t, "&lt;");
            break;
        case '>':
            puts_(t, "&gt;");
            break;
        case '&':
            puts_(t, "&amp;");
            break;
        case '"':
            puts_(t, "&quot;");
            break;
        case '\'':
            puts_(t, "&#39;");
            break;
        default:
            put(t, s, 1);
        }
    }
}

static const char *verdict_class(matrix_verdict_t v)
{
    switch (v) {
    case MATRIX_CONSISTENT:
        return "v-ok";
    case MATRIX_EXPECTED:
        return "v-exp";
    case MATRIX_VIOLATION:
        return "v-fail";
    case MATRIX_NOT_RUN:
        return "v-notrun";
    default:
        return "v-none";
    }
}

static const char *verdict_word(matrix_verdict_t v)
{
    switch (v) {
    case MATRIX_CONSISTENT:
        return "ok";
    case MATRIX_EXPECTED:
        return "lesson";
    case MATRIX_VIOLATION:
        return "FAIL";
    case MATRIX_NOT_RUN:
        return "not run";
    default:
        return "&#8211;";
    }
}

static const matrix_cell_t *cell_at(const matrix_story_t *s, size_t row, size_t action, size_t mode)
{
    for (size_t i = 0; i < s->n_cells; i++)
        if (s->cells[i].row == row && s->cells[i].action == action && s->cells[i].mode == mode)
            return &s->cells[i];
    return NULL;
}

static void count(const matrix_story_t *s, size_t mode, size_t out[5])
{
    memset(out, 0, 5 * sizeof *out);
    for (size_t i = 0; i < s->n_cells; i++)
        if (s->cells[i].mode == mode && s->cells[i].verdict <= MATRIX_NOT_RUN)
            out[s->cells[i].verdict]++;
}

/* Per mode, one row of tiles: its cells by verdict. */
static void story_tiles(text_t *t, const matrix_story_t *s)
{
    for (size_t m = 0; m < s->n_modes; m++) {
        size_t c[5];
        count(s, m, c);
        size_t all = c[MATRIX_CONSISTENT] + c[MATRIX_EXPECTED] + c[MATRIX_VIOLATION] + c[MATRIX_NOT_RUN];
        puts_(t, "<div class=\"tiles\"><div class=\"tile mode\"><b>");
        esc(t, s->modes[m]);
        printf_(t, "</b>mode</div><div class=\"tile\"><b>%zu</b>cells</div>", all);
        printf_(t, "<div class=\"tile ok\"><b>%zu</b>consistent</div>", c[MATRIX_CONSISTENT]);
        printf_(t, "<div class=\"tile exp\"><b>%zu</b>expected violations</div>", c[MATRIX_EXPECTED]);
        printf_(t, "<div class=\"tile%s\"><b>%zu</b>violations</div>", c[MATRIX_VIOLATION] ? " fail" : "",
                c[MATRIX_VIOLATION]);
        if (c[MATRIX_NOT_RUN] > 0)
            printf_(t, "<div class=\"tile\"><b>%zu</b>not run</div>", c[MATRIX_NOT_RUN]);
        puts_(t, "</div>\n");
    }
}

static void story_table(text_t *t, const matrix_story_t *s)
{
    puts_(t, "<table class=\"matrix\"><thead><tr><th rowspan=\"2\">Instance</th><th rowspan=\"2\">Point</th>"
             "<th rowspan=\"2\">Hit</th>");
    for (size_t a = 0; a < s->n_actions; a++) {
        printf_(t, "<th class=\"act\" colspan=\"%zu\">", s->n_modes);
        esc(t, s->actions[a]);
        puts_(t, "</th>");
    }
    puts_(t, "</tr><tr>");
    for (size_t a = 0; a < s->n_actions; a++)
        for (size_t m = 0; m < s->n_modes; m++) {
            puts_(t, "<th class=\"mode\">");
            esc(t, s->modes[m]);
            puts_(t, "</th>");
        }
    puts_(t, "</tr></thead><tbody>\n");
    int band = 0;
    for (size_t r = 0; r < s->n_rows; r++) {
        const matrix_row_t *row = &s->rows[r];
        if (r > 0 && strcmp(row->instance, s->rows[r - 1].instance) != 0)
            band ^= 1;
        printf_(t, "<tr class=\"b%d\"><td class=\"k\">", band);
        esc(t, row->instance);
        puts_(t, "</td><td class=\"k mono\">");
        esc(t, row->point);
        printf_(t, "</td><td class=\"k\">%llu</td>", row->occurrence);
        for (size_t a = 0; a < s->n_actions; a++)
            for (size_t m = 0; m < s->n_modes; m++) {
                const matrix_cell_t *c = cell_at(s, r, a, m);
                matrix_verdict_t v = c != NULL ? c->verdict : MATRIX_NONE;
                printf_(t, "<td class=\"c %s\">", verdict_class(v));
                if (c != NULL && c->href != NULL) {
                    puts_(t, "<a class=\"");
                    puts_(t, verdict_class(v));
                    puts_(t, "\" href=\"");
                    esc(t, c->href);
                    puts_(t, "\" title=\"");
                    esc(t, s->actions[a]);
                    puts_(t, " at ");
                    esc(t, row->point);
                    printf_(t, " hit %llu of ", row->occurrence);
                    esc(t, row->instance);
                    puts_(t, ", ");
                    esc(t, s->modes[m]);
                    puts_(t, ": ");
                    esc(t, c->note);
                    printf_(t, "\">%s</a>", verdict_word(v));
                } else {
                    printf_(t, "<span title=\"%s\">%s</span>",
                            v == MATRIX_NONE ? "not explored: no such action here, or no such hit in this mode"
                                             : "no page",
                            verdict_word(v));
                }
                puts_(t, "</td>");
            }
        puts_(t, "</tr>\n");
    }
    if (s->n_rows == 0)
        printf_(t, "<tr><td colspan=\"%zu\">No fault point was hit.</td></tr>\n", 3 + s->n_actions * s->n_modes);
    puts_(t, "</tbody></table>\n");
}

static void story_lessons(text_t *t, const matrix_story_t *s)
{
    puts_(t, "<h3>Lessons");
    if (s->lessons_path != NULL) {
        puts_(t, " <span class=\"note\">(");
        esc(t, s->lessons_path);
        puts_(t, ")</span>");
    }
    puts_(t, "</h3>\n");
    if (s->n_lessons == 0) {
        puts_(t, "<p class=\"note\">None: every violation is unexpected.</p>\n");
        return;
    }
    puts_(t, "<table class=\"list\"><thead><tr><th>Where</th><th>Breaks</th><th>Cells</th><th>Why it is a lesson"
             "</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < s->n_lessons; i++) {
        const matrix_lesson_t *l = &s->lessons[i];
        puts_(t, "<tr><td class=\"mono\">");
        for (const char *p = l->what; p != NULL && *p != '\0';) {
            const char *nl = strchr(p, '\n');
            size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
            char line[400];
            snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
            esc(t, line);
            if (nl != NULL)
                puts_(t, "<br>");
            p = nl != NULL ? nl + 1 : p + len;
        }
        puts_(t, "</td><td class=\"mono\">");
        esc(t, l->breaks);
        printf_(t, "</td><td>%zu</td><td class=\"why\">", l->cells);
        esc(t, l->reason);
        puts_(t, "</td></tr>\n");
    }
    puts_(t, "</tbody></table>\n");
}

static void story_violations(text_t *t, const matrix_story_t *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_cells; i++)
        n += s->cells[i].verdict == MATRIX_VIOLATION;
    printf_(t, "<h3>Violations (%zu)</h3>\n", n);
    if (n == 0) {
        puts_(t, "<p class=\"note\">None.</p>\n");
        return;
    }
    puts_(t, "<table class=\"list\"><thead><tr><th>Mode</th><th>Instance</th><th>Point</th><th>Hit</th>"
             "<th>Action</th><th>What broke</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < s->n_cells; i++) {
        const matrix_cell_t *c = &s->cells[i];
        if (c->verdict != MATRIX_VIOLATION)
            continue;
        const matrix_row_t *row = &s->rows[c->row];
        puts_(t, "<tr><td>");
        esc(t, s->modes[c->mode]);
        puts_(t, "</td><td>");
        esc(t, row->instance);
        puts_(t, "</td><td class=\"mono\">");
        esc(t, row->point);
        printf_(t, "</td><td>%llu</td><td>", row->occurrence);
        if (c->href != NULL) {
            puts_(t, "<a href=\"");
            esc(t, c->href);
            puts_(t, "\">");
        }
        esc(t, s->actions[c->action]);
        if (c->href != NULL)
            puts_(t, "</a>");
        puts_(t, "</td><td class=\"why\">");
        esc(t, c->note);
        puts_(t, "</td></tr>\n");
    }
    puts_(t, "</tbody></table>\n");
}

static void page(text_t *t, const matrix_page_t *p)
{
    size_t violations = 0, not_run = 0;
    for (size_t k = 0; k < p->n_stories; k++)
        for (size_t i = 0; i < p->stories[k].n_cells; i++) {
            violations += p->stories[k].cells[i].verdict == MATRIX_VIOLATION;
            not_run += p->stories[k].cells[i].verdict == MATRIX_NOT_RUN;
        }
    bool fail = violations + not_run > 0;
    puts_(t, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    puts_(t, fail ? "FAIL " : "");
    puts_(t, "natomic lab: exploring every fault point</title>\n<style>\n");
    puts_(t, page_css);
    puts_(t, "</style>\n</head>\n<body>\n");
    printf_(t, "<h1><span class=\"badge%s\">%s</span>Exploring every fault point</h1>\n", fail ? " fail" : "",
            fail ? "FAIL" : "PASS");
    puts_(t, "<p class=\"note\">Each cell is one replay of the story with one fault, at one hit of one point, in "
             "one mode; a crashed process is restarted after a quiet period, and the story's invariants are "
             "checked once it settled. <b>ok</b>: they all hold. <b>lesson</b>: memory mode broke what a lesson "
             "of the story says it breaks, and why. <b>FAIL</b>: any other violation. Hover a cell for what "
             "broke; click it for the replay's sequence diagram.</p>\n");
    printf_(t, "<p class=\"note\">%.1f s with %d job%s", p->duration_s, p->jobs, p->jobs == 1 ? "" : "s");
    if (p->command != NULL) {
        puts_(t, ": <code>");
        esc(t, p->command);
        puts_(t, "</code>");
    }
    puts_(t, "</p>\n<p class=\"legend\"><span><i class=\"v-ok\">ok</i>consistent</span><span><i class=\"v-exp\">"
             "lesson</i>expected violation</span><span><i class=\"v-fail\">FAIL</i>violation</span><span><i "
             "class=\"v-none\">&#8211;</i>not explored</span></p>\n");
    for (size_t k = 0; k < p->n_stories; k++) {
        const matrix_story_t *s = &p->stories[k];
        puts_(t, "<h2>");
        esc(t, s->title);
        puts_(t, "</h2>\n");
        if (s->path != NULL) {
            puts_(t, "<p class=\"note\">File <code>");
            esc(t, s->path);
            puts_(t, "</code></p>\n");
        }
        if (s->about != NULL) {
            puts_(t, "<p class=\"about\">");
            esc(t, s->about);
            puts_(t, "</p>\n");
        }
        for (size_t i = 0; i < s->n_notes; i++) {
            puts_(t, "<p class=\"note\">");
            esc(t, s->notes[i]);
            puts_(t, "</p>\n");
        }
        if (s->n_links > 0) {
            puts_(t, "<p class=\"note\">");
            for (size_t i = 0; i < s->n_links; i++) {
                puts_(t, i > 0 ? " &#183; <a href=\"" : "<a href=\"");
                esc(t, s->links[i].href);
                puts_(t, "\">");
                esc(t, s->links[i].text);
                puts_(t, "</a>");
            }
            puts_(t, "</p>\n");
        }
        story_tiles(t, s);
        story_table(t, s);
        story_lessons(t, s);
        story_violations(t, s);
    }
    puts_(t, "</body>\n</html>\n");
}

int matrix_write(const char *path, const matrix_page_t *p, char *err, size_t errcap)
{
    text_t t = {0};
    page(&t, p);
    if (t.oom || t.p == NULL) {
        free(t.p);
        snprintf(err, errcap, "%s: out of memory", path);
        return -1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f != NULL && fwrite(t.p, 1, t.len, f) == t.len;
    if (f != NULL && fclose(f) != 0)
        ok = false;
    free(t.p);
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
