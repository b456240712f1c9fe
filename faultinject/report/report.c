/*
 * report.c -- the readable report of a run.
 *
 * Per scenario two pages tell the same story: <base>.md with a Mermaid
 * sequenceDiagram (renders on any Markdown host that knows Mermaid), and
 * <base>.html, a page that needs nothing but a browser: inline CSS, the
 * sequence diagram drawn here as inline SVG, no script, no font or image
 * from the network, only relative links to the other pages of the report.
 * index.html and index.md summarise the run and link every scenario.
 *
 * The story. Each participant (a service, "lab" for the runner's own
 * client, "events" for the event stream) is a column in order of first
 * appearance, with "lab" always first and "events" always last. Every
 * timeline entry is a row, in the order things happened at their source
 * (the timeline is kept in that order, see timeline.c), not the order the
 * lab heard of them. An arrow is drawn from `from` to `to` for calls,
 * compensations, events and replies (the runner records a reply as
 * callee -> caller); everything else is a box over one lifeline, each kind
 * with its own colour and its own word in front of the label, so that the
 * Markdown reads right without colours: FAULT (the lab caused it: kill,
 * pause, cut), FIRED (a fault point fired in that service, with a burst on
 * the box's edge: the moment itself), TIMEOUT (the lab gave up on a call),
 * ARM (the lab enabled a fault point rule), RESTART, RESUME, RELEASE (a
 * fault point disabled) and HEAL (a link back to normal) -- four different
 * ends of a fault, never one "heal" -- dead letters, recovery steps (teal),
 * notes and failed checks.
 *
 * Nothing is cut. A label longer than its room wraps onto more lines (at a
 * space or a comma when one is in reach) and its row grows, so the fields
 * that decide a story -- a reply's status and outcome, an error's code and
 * type -- are always on the page, without hovering (the tooltip stays, for
 * who has a mouse). The drawing is scaled to the page's width, down to
 * MIN_SCALE, and scrolls sideways beyond that; a long story scrolls inside
 * its frame under a header that keeps the participants' names in view.
 *
 * Recovery. A durable story's page also has a Recovery section: every
 * step recovery told on natomic.recovery.<service> (which instance claimed
 * which call from which dead owner, each compensation it ran, how the saga
 * ended), in time order, under a sentence that counts the sagas by outcome
 * and gives the time from a restart to the first saga it ended. The
 * summary shows each story's mode and that time.
 *
 * Bounded size. A diagram shows at most DIAGRAM_MAX entries. When a
 * scenario recorded more (a hundred concurrent orders), entries are kept
 * by what they teach: faults (and the points that fired, the lab's
 * timeouts, restarts, releases, heals), compensations, dead letters,
 * recovery steps and errors first, then notes and the call or reply that
 * gives an error or a compensation its context, then the plain traffic
 * (successful calls, replies, events) earliest first: the reader gets the first orders in
 * full, then only what went wrong. Where entries were left out the diagram
 * says how many, in place and in total.
 *
 * The summary. A story is ok, FAIL (a check failed), or "expected
 * violation": it names invariants it expects to break, and every check
 * passed, the checks that they broke included. That state has its own
 * colour, tile and column: it passed, but as a lesson, not as a story of
 * things going right. Every summary is
 * whole sentences: the index shows the first sentence of each `about`
 * entire, never cut with an ellipsis.
 *
 * Escaping. Every piece of recorded text is escaped for where it lands:
 * HTML entities in pages and SVG, Mermaid's #code; entities for the
 * characters Mermaid reads as syntax (; # < > & and newlines), backslashes
 * and <br> in Markdown table cells. Invalid UTF-8 becomes U+FFFD (HTML) or
 * '?' (Markdown) rather than reaching the page.
 *
 * Failure. Each file is written to a temporary name in the same folder and
 * renamed over the old one, so a reader never sees half a page; any error
 * (folder, write, rename, memory) stops the report and returns -1 with a
 * message naming the path. Pages already written stay.
 */
#include "report.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIAGRAM_MAX 400     /* entries drawn per diagram                    */
#define MAX_PARTS 48        /* participants (columns) per diagram           */
#define MERMAID_LINE 72     /* characters per line of a label in Mermaid    */
#define MAX_LINES 24        /* lines of one wrapped label (a 255-byte label
                               at the narrowest room needs 22)              */
#define MIN_WRAP 12         /* characters per line, however narrow the room */
#define CONTEXT_SCAN 400    /* how far to look for an entry's call or reply */

/* SVG geometry, in CSS pixels. Labels are set in a monospace font so that
 * their width can be known without a script. */
#define CHAR_W 7.4          /* 12px monospace advance, rounded up           */
#define NAME_CHAR_W 8.0     /* 13px bold sans-serif, generous average       */
#define TIME_W 84.0
#define HEAD_H 46.0
#define ROW_H 30.0
#define LINE_H 15.0         /* each further line of a wrapped label         */
#define GAP_ROW_H 24.0
#define MIN_GAP 150.0
#define MAX_GAP 400.0
#define NOTE_MAX_W 460.0
#define LOOP_W 26.0
#define FIT_W 1320.0        /* widest drawing before labels give way        */
#define MIN_SCALE 0.8       /* narrowest the page may scale it, then scroll */

/* ---- a growable text buffer; remembers running out of memory ------------ */

typedef struct text {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
} text_t;

static void text_putn(text_t *t, const char *s, size_t n)
{
    if (t->oom)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap != 0 ? t->cap : 8192;
        while (cap < t->len + n + 1)
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

static void text_puts(text_t *t, const char *s)
{
    text_putn(t, s, strlen(s));
}

static void text_printf(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text_t *t, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        text_putn(t, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        t->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    text_putn(t, big, (size_t)n);
    free(big);
}

static void text_free(text_t *t)
{
    free(t->p);
    memset(t, 0, sizeof *t);
}

/* ---- UTF-8 and escaping -------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at s (s[0] != 0), or 0. */
static size_t utf8_seq(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n;
    uint32_t min;
    if ((s[0] & 0xE0) == 0xC0) {
        n = 2;
        min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3;
        min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    uint32_t cp = s[0] & (0x7Fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Characters (code points; an invalid byte counts as one) in s. */
static size_t utf8_chars(const char *s)
{
    size_t count = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; count++) {
        size_t n = utf8_seq(p);
        p += n != 0 ? n : 1;
    }
    return count;
}

typedef enum esc {
    ESC_HTML,      /* element content or attribute; newlines kept            */
    ESC_HTML_LINE, /* the same on one line (SVG text, table cells)           */
    ESC_MERMAID,   /* a sequenceDiagram message or note                      */
    ESC_MD_CELL,   /* a Markdown table cell                                  */
    ESC_MD_TEXT    /* a Markdown paragraph                                   */
} esc_t;

static void put_ascii(text_t *t, unsigned char c, esc_t how)
{
    const char *rep = NULL;
    bool html = how == ESC_HTML || how == ESC_HTML_LINE;
    if (html) {
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        case '\n': rep = how == ESC_HTML ? "\n" : " "; break;
        case '\t': rep = how == ESC_HTML ? "\t" : " "; break;
        case '\r': rep = ""; break;
        default: break;
        }
    } else if (how == ESC_MERMAID) {
        switch (c) {
        case ';': rep = "#59;"; break;
        case '#': rep = "#35;"; break;
        case '&': rep = "#amp;"; break;
        case '<': rep = "#lt;"; break;
        case '>': rep = "#gt;"; break;
        case '\n': rep = "<br/>"; break;
        case '\r': rep = ""; break;
        default: break;
        }
    } else {
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\r': rep = ""; break;
        case '|': rep = how == ESC_MD_CELL ? "\\|" : "|"; break;
        case '*': rep = how == ESC_MD_CELL ? "\\*" : "*"; break;
        case '`': rep = how == ESC_MD_CELL ? "\\`" : "`"; break;
        case '\n': rep = how == ESC_MD_CELL ? "<br>" : "\n"; break;
        case '\t': rep = how == ESC_MD_CELL ? " " : "\t"; break;
        default: break;
        }
    }
    if (rep != NULL) {
        text_puts(t, rep);
    } else {
        char ch = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
        text_putn(t, &ch, 1);
    }
}

/* Appends s escaped for `how`; with max_chars > 0, at most that many
 * characters, the last one an ellipsis when s was longer. Returns whether
 * s was cut. */
static bool put_esc(text_t *t, const char *s, esc_t how, size_t max_chars)
{
    if (s == NULL)
        s = "";
    bool html = how == ESC_HTML || how == ESC_HTML_LINE;
    bool cut = max_chars > 0 && utf8_chars(s) > max_chars;
    size_t keep = cut ? max_chars - 1 : SIZE_MAX;
    size_t count = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0' && count < keep; count++) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            text_puts(t, html ? "&#xFFFD;" : "?");
            p++;
        } else if (n > 1) {
            text_putn(t, (const char *)p, n);
            p += n;
        } else {
            put_ascii(t, *p++, how);
        }
    }
    if (cut)
        text_puts(t, html ? "&#8230;" : "...");
    return cut;
}

/* One line of a wrapped label: bytes [start, start + len) of it. */
typedef struct line_span {
    size_t start;
    size_t len;
} line_span_t;

static bool wrap_after(unsigned char c)
{
    return c == ' ' || c == ',' || c == ';' || c == '\t';
}

/*
 * Splits s into lines of at most `width` characters (MIN_WRAP at least):
 * after a space or a comma when one is in reach, else inside a word; a
 * newline always breaks. The spaces a line breaks at belong to no line.
 * Returns the number of lines (1 for ""), at most max: the last one then
 * takes the rest, longer than width.
 */
static size_t wrap_lines(const char *s, size_t width, line_span_t *lines, size_t max)
{
    assert(max > 0);
    if (width < MIN_WRAP)
        width = MIN_WRAP;
    const unsigned char *u = (const unsigned char *)(s != NULL ? s : "");
    size_t total = strlen((const char *)u), pos = 0, n = 0;
    while (n < max) {
        if (n == max - 1) {
            lines[n++] = (line_span_t){pos, total - pos};
            break;
        }
        size_t end = pos, chars = 0, brk = 0; /* brk: a break after it, 0 none */
        bool newline = false;
        while (u[end] != '\0' && chars < width) {
            if (u[end] == '\n') {
                newline = true;
                break;
            }
            size_t k = utf8_seq(u + end);
            end += k != 0 ? k : 1;
            chars++;
            if (wrap_after(u[end - 1]))
                brk = end;
        }
        if (u[end] == '\0' || newline) {
            lines[n++] = (line_span_t){pos, end - pos};
            if (u[end] == '\0')
                break;
            pos = end + 1;
            continue;
        }
        /* The line is full: a break at the space or comma right after it counts too. */
        if (wrap_after(u[end]) && u[end] != ',' && u[end] != ';')
            brk = end;
        size_t cut = brk > pos ? brk : end;
        size_t len = cut - pos;
        while (len > 0 && (u[pos + len - 1] == ' ' || u[pos + len - 1] == '\t'))
            len--;
        lines[n++] = (line_span_t){pos, len};
        pos = cut;
        while (u[pos] == ' ' || u[pos] == '\t')
            pos++;
        if (u[pos] == '\0')
            break;
    }
    return n;
}

/* Line i of a wrapping of s, as a string, into out (cap > span). */
static void line_text(const char *s, const line_span_t *span, char *out, size_t cap)
{
    size_t len = span->len < cap - 1 ? span->len : cap - 1;
    memcpy(out, s + span->start, len);
    out[len] = '\0';
}

/* A Markdown code fence longer than any run of backticks in s. */
static void put_fence(text_t *t, const char *s)
{
    size_t longest = 0, run = 0;
    for (; s != NULL && *s != '\0'; s++) {
        run = *s == '`' ? run + 1 : 0;
        if (run > longest)
            longest = run;
    }
    for (size_t i = 0; i < (longest >= 3 ? longest + 1 : 3); i++)
        text_putn(t, "`", 1);
}

/* Whether out[0..len) ends with an abbreviation whose period ends no sentence. */
static bool ends_with_abbreviation(const char *out, size_t len)
{
    static const char *const words[] = {"e.g.", "i.e.", "vs.", "cf.", "approx."};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t k = strlen(words[i]);
        if (len >= k && strncasecmp(out + len - k, words[i], k) == 0 &&
            (len == k || out[len - k - 1] == ' ' || out[len - k - 1] == '('))
            return true;
    }
    return false;
}

/*
 * The first sentence of `about`, whole, on one line, into out (cap > 0):
 * up to the first . ! or ? that ends a word (not the period of "e.g."),
 * or the end of the first paragraph, which then gets a period. Only a
 * sentence longer than cap is cut (never a character).
 */
static void first_sentence(const char *about, char *out, size_t cap)
{
    size_t len = 0;
    bool space = false, ended = false;
    for (const char *p = about != NULL ? about : ""; *p != '\0' && len + 2 < cap; p++) {
        if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
            if (p[0] == '\n' && p[1] == '\n' && len > 0)
                break;
            space = len > 0;
            continue;
        }
        if (space && len + 3 < cap)
            out[len++] = ' ';
        space = false;
        out[len++] = *p;
        if ((*p == '.' || *p == '!' || *p == '?') && (p[1] == '\0' || p[1] == ' ' || p[1] == '\n') &&
            !ends_with_abbreviation(out, len)) {
            ended = true;
            break;
        }
    }
    /* A paragraph without a full stop (or an about that is one phrase) still reads as a sentence. */
    if (!ended && len > 0 && out[len - 1] != '.' && out[len - 1] != '!' && out[len - 1] != '?' && out[len - 1] != ':')
        out[len++] = '.';
    out[len] = '\0';
    /* The cap may have cut a character: drop its first half. */
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq((const unsigned char *)out + i);
        if (n == 0 && (unsigned char)out[i] >= 0xC0 && len - i < 5) {
            out[i] = '\0';
            break;
        }
        i += n != 0 ? n : 1;
    }
}

/* ---- files --------------------------------------------------------------- */

static void set_err(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (err == NULL || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* mkdir -p: 0 when dir exists as a folder afterwards, or -1 with err. */
static int make_dirs(const char *dir, char *err, size_t errcap)
{
    char path[PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof path) {
        set_err(err, errcap, "report folder name is empty or too long");
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            set_err(err, errcap, "mkdir %s: %s", path, strerror(errno));
            return -1;
        }
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        set_err(err, errcap, "%s: not a folder", dir);
        return -1;
    }
    return 0;
}

/* Writes dir/name through a temporary file and a rename. 0, or -1 with
 * err and no temporary file left behind. */
static int write_page(const char *dir, const char *name, const text_t *t, char *err, size_t errcap)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (t->oom) {
        set_err(err, errcap, "%s/%s: out of memory", dir, name);
        return -1;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.%ld.tmp", dir, name, (long)getpid()) >= sizeof tmp) {
        set_err(err, errcap, "%s/%s: path too long", dir, name);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        set_err(err, errcap, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t done = 0;
    while (done < t->len) {
        ssize_t w = write(fd, t->p + done, t->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            set_err(err, errcap, "write %s: %s", tmp, w < 0 ? strerror(errno) : "no progress");
            close(fd);
            unlink(tmp);
            return -1;
        }
        done += (size_t)w;
    }
    if (close(fd) != 0) {
        set_err(err, errcap, "close %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errcap, "rename %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- the story: participants and the entries a diagram shows ------------- */

typedef struct story {
    timeline_entry_t *items;   /* a copy of the timeline, in time order        */
    size_t n;
    size_t dropped;            /* entries the timeline itself did not keep     */
    bool *shown;               /* per item: drawn                              */
    size_t n_shown;
    const char *parts[MAX_PARTS]; /* column names, borrowed from items or static */
    char ids[MAX_PARTS][40];   /* Mermaid identifiers                          */
    size_t n_parts;
} story_t;

static bool is_arrow(timeline_kind_t k)
{
    return k == TL_CALL || k == TL_REPLY || k == TL_COMPENSATION || k == TL_EVENT;
}

/* The participants an entry touches: its arrow's ends, or (a == b) the
 * lifeline a box sits on. */
static void entry_ends(const timeline_entry_t *e, const char **a, const char **b)
{
    const char *from = e->from[0] != '\0' ? e->from : NULL;
    const char *to = e->to[0] != '\0' ? e->to : NULL;
    switch (e->kind) {
    case TL_EVENT:
        *a = from != NULL ? from : "lab";
        *b = to != NULL ? to : "events";
        break;
    case TL_CALL:
    case TL_REPLY:
    case TL_COMPENSATION:
        *a = from != NULL ? from : "lab";
        *b = to != NULL ? to : *a;
        break;
    case TL_DEAD_LETTER:
    case TL_RECOVERY:
    case TL_FIRED:
    case TL_TIMEOUT:
        *a = *b = from != NULL ? from : to != NULL ? to : "lab";
        break;
    case TL_FAULT:
    case TL_ARM:
    case TL_RESTART:
    case TL_RESUME:
    case TL_RELEASE:
    case TL_HEAL:
    case TL_NOTE:
    default:
        *a = *b = to != NULL ? to : from != NULL ? from : "lab";
        break;
    }
}

static int part_index(const story_t *st, const char *name)
{
    for (size_t i = 0; i < st->n_parts; i++)
        if (strcmp(st->parts[i], name) == 0)
            return (int)i;
    return -1;
}

/* The text drawn for an entry: its label behind a plain ASCII prefix that
 * says what it is, so the Markdown reads right without colours too. */
static void display_label(const timeline_entry_t *e, char *out, size_t cap)
{
    const char *prefix = "";
    switch (e->kind) {
    case TL_COMPENSATION: prefix = e->error ? "ERR undo: " : "undo: "; break;
    case TL_DEAD_LETTER: prefix = "dead letter: "; break;
    case TL_FAULT: prefix = "FAULT "; break;
    case TL_RECOVERY: prefix = "RECOVERY "; break;
    case TL_FIRED: prefix = "FIRED "; break;
    case TL_TIMEOUT: prefix = "TIMEOUT "; break;
    case TL_ARM: prefix = "ARM "; break;
    case TL_RESTART: prefix = "RESTART "; break;
    case TL_RESUME: prefix = "RESUME "; break;
    case TL_RELEASE: prefix = "RELEASE "; break;
    case TL_HEAL: prefix = "HEAL "; break;
    case TL_CALL:
    case TL_REPLY:
    case TL_EVENT:
    case TL_NOTE:
    default: prefix = e->error ? "ERR " : ""; break;
    }
    snprintf(out, cap, "%s%s", prefix, e->label);
}

static bool mermaid_keyword(const char *s)
{
    static const char *const words[] = {"participant", "actor", "as", "note", "over", "left", "right", "of",
                                        "loop", "alt", "else", "opt", "par", "and", "rect", "critical",
                                        "option", "break", "end", "box", "activate", "deactivate",
                                        "autonumber", "title", "link", "links", "properties", "details",
                                        "create", "destroy", "sequenceDiagram"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcasecmp(s, words[i]) == 0)
            return true;
    return false;
}

static void add_part(story_t *st, const char *name)
{
    if (part_index(st, name) < 0 && st->n_parts < MAX_PARTS)
        st->parts[st->n_parts++] = name;
}

/* Columns in order of first appearance, "lab" first and "events" last. */
static void story_participants(story_t *st)
{
    const char *seen[MAX_PARTS];
    size_t n_seen = 0;
    for (size_t i = 0; i < st->n; i++) {
        const char *ends[2];
        entry_ends(&st->items[i], &ends[0], &ends[1]);
        for (int k = 0; k < 2; k++) {
            bool known = false;
            for (size_t j = 0; j < n_seen && !known; j++)
                known = strcmp(seen[j], ends[k]) == 0;
            if (!known && n_seen < MAX_PARTS)
                seen[n_seen++] = ends[k];
        }
    }
    bool has_lab = false, has_events = false;
    for (size_t j = 0; j < n_seen; j++) {
        has_lab |= strcmp(seen[j], "lab") == 0;
        has_events |= strcmp(seen[j], "events") == 0;
    }
    if (has_lab || n_seen == 0)
        add_part(st, "lab");
    for (size_t j = 0; j < n_seen; j++)
        if (strcmp(seen[j], "lab") != 0 && strcmp(seen[j], "events") != 0 &&
            st->n_parts < MAX_PARTS - (has_events ? 1 : 0))
            add_part(st, seen[j]);
    if (has_events)
        add_part(st, "events");

    for (size_t i = 0; i < st->n_parts; i++) {
        const char *p = st->parts[i];
        bool plain = (p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z');
        for (const char *c = p; *c != '\0' && plain; c++)
            plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
        if (plain && !mermaid_keyword(p))
            snprintf(st->ids[i], sizeof st->ids[i], "%s", p);
        else
            snprintf(st->ids[i], sizeof st->ids[i], "p%zu", i);
    }
}

/* How much an entry teaches, 0 most; 4 cannot be drawn. Events are
 * plain traffic: kept in time order with the calls they follow. */
static unsigned char entry_tier(const story_t *st, const timeline_entry_t *e)
{
    const char *a, *b;
    entry_ends(e, &a, &b);
    if (part_index(st, a) < 0 || part_index(st, b) < 0)
        return 4;
    if (e->error || (e->kind != TL_CALL && e->kind != TL_REPLY && e->kind != TL_EVENT && e->kind != TL_NOTE))
        return 0; /* faults and their ends, compensations, dead letters, recovery, timeouts */
    if (e->kind == TL_NOTE)
        return 1;
    return 2;
}

/* Chooses the entries to draw (see the essay). 0, or -1 out of memory. */
static int story_select(story_t *st)
{
    if (st->n == 0)
        return 0;
    unsigned char *tier = malloc(st->n);
    if (tier == NULL)
        return -1;
    for (size_t i = 0; i < st->n; i++)
        tier[i] = entry_tier(st, &st->items[i]);
    /* Context: the call an error reply answers, the reply a compensation got. */
    for (size_t i = 0; i < st->n; i++) {
        const timeline_entry_t *e = &st->items[i];
        if (e->kind == TL_REPLY && e->error) {
            for (size_t j = i; j > 0 && i - j < CONTEXT_SCAN; j--) {
                const timeline_entry_t *c = &st->items[j - 1];
                if ((c->kind == TL_CALL || c->kind == TL_COMPENSATION) && strcmp(c->from, e->to) == 0 &&
                    strcmp(c->to, e->from) == 0) {
                    if (tier[j - 1] == 2)
                        tier[j - 1] = 1;
                    break;
                }
            }
        } else if (e->kind == TL_COMPENSATION) {
            for (size_t j = i + 1; j < st->n && j - i < CONTEXT_SCAN; j++) {
                const timeline_entry_t *r = &st->items[j];
                if (r->kind == TL_REPLY && strcmp(r->from, e->to) == 0 && strcmp(r->to, e->from) == 0) {
                    if (tier[j] == 2)
                        tier[j] = 1;
                    break;
                }
            }
        }
    }
    size_t budget = DIAGRAM_MAX;
    for (unsigned char t = 0; t < 3 && budget > 0; t++) {
        for (size_t i = 0; i < st->n && budget > 0; i++) {
            if (tier[i] == t) {
                st->shown[i] = true;
                st->n_shown++;
                budget--;
            }
        }
    }
    free(tier);
    return 0;
}

static void story_free(story_t *st)
{
    free(st->items);
    free(st->shown);
    memset(st, 0, sizeof *st);
}

/* Copies the timeline (under its lock: the tap may still be adding) and
 * chooses what to draw. 0, or -1 out of memory with st empty. */
static int story_build(story_t *st, const timeline_t *tl)
{
    memset(st, 0, sizeof *st);
    if (tl != NULL) {
        pthread_mutex_t *mu = (pthread_mutex_t *)&tl->mu; /* locking does not change the record */
        pthread_mutex_lock(mu);
        if (tl->count > 0) {
            st->items = malloc(tl->count * sizeof *st->items);
            if (st->items != NULL) {
                memcpy(st->items, tl->items, tl->count * sizeof *st->items);
                st->n = tl->count;
            }
        }
        st->dropped = tl->dropped;
        bool failed = tl->count > 0 && st->items == NULL;
        pthread_mutex_unlock(mu);
        if (failed)
            return -1;
    }
    st->shown = calloc(st->n > 0 ? st->n : 1, sizeof *st->shown);
    if (st->shown == NULL) {
        story_free(st);
        return -1;
    }
    story_participants(st);
    if (story_select(st) != 0) {
        story_free(st);
        return -1;
    }
    return 0;
}

/* ---- per-scenario facts -------------------------------------------------- */

static size_t checks_failed(const report_scenario_t *s)
{
    size_t failed = 0;
    for (size_t i = 0; i < s->n_checks; i++)
        failed += s->checks[i].ok ? 0 : 1;
    return failed;
}

static const char *group_of(const report_scenario_t *s)
{
    return s->group != NULL ? s->group : "";
}

static const char *name_of(const report_scenario_t *s)
{
    return s->name != NULL && s->name[0] != '\0' ? s->name : "unnamed";
}

/* A story's state in the summary: ok, a lesson whose expected violation
 * was seen (every check passed, those of the violations included), or failed. */
typedef enum story_state { STATE_OK, STATE_EXPECTED_VIOLATION, STATE_FAIL } story_state_t;

static story_state_t state_of(const report_scenario_t *s)
{
    if (checks_failed(s) > 0)
        return STATE_FAIL;
    return s->n_violations > 0 ? STATE_EXPECTED_VIOLATION : STATE_OK;
}

/* The row class, the word in the Result column, the badge. */
static const char *state_class(story_state_t st)
{
    return st == STATE_FAIL ? "fail" : st == STATE_EXPECTED_VIOLATION ? "xv" : "ok";
}

static const char *state_word(story_state_t st)
{
    return st == STATE_FAIL ? "FAIL" : st == STATE_EXPECTED_VIOLATION ? "expected violation" : "ok";
}

/* "order_atomicity" or "a, b and c": the invariants a story expects to break, "" for none. */
static void violations_text(const report_scenario_t *s, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n_violations && used < cap; i++) {
        const char *sep = i == 0 ? "" : i + 1 == s->n_violations ? " and " : ", ";
        int n = snprintf(out + used, cap - used, "%s%s", sep, s->violations[i] != NULL ? s->violations[i] : "?");
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* The sentence a story with an expected violation gets under its title, "" for others. */
static void violation_sentence(const report_scenario_t *s, char *out, size_t cap)
{
    char names[600];
    violations_text(s, names, sizeof names);
    if (state_of(s) != STATE_EXPECTED_VIOLATION)
        snprintf(out, cap, "%s", "");
    else
        snprintf(out, cap, "This story is a lesson: it expects %s to break, and %s did; every check passed.", names,
                 s->n_violations == 1 ? "it" : "they");
}

static const char *mode_of(const report_scenario_t *s)
{
    return s->durable ? "durable" : "memory";
}

/* "31.4 ms after the restart of orders", or "" when the story has no such figure. */
static void recovery_after(const report_scenario_t *s, char *out, size_t cap)
{
    if (!s->has_recovery_ms)
        snprintf(out, cap, "%s", "");
    else
        snprintf(out, cap, "%.1f ms after the restart of %s", s->recovery_ms,
                 s->recovery_restart != NULL && s->recovery_restart[0] != '\0' ? s->recovery_restart : "a service");
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A recovery step that went wrong: a saga ended incomplete, or a compensation
 * dead-lettered ("call inventory.release: dead-lettered"; an "ended" detail
 * counts them, "0 dead-lettered", which is no failure). */
static bool recovery_bad(const report_recovery_t *r)
{
    return has_prefix(r->detail, "outcome incomplete") ||
           (strcmp(r->event, "compensated") == 0 && has_suffix(r->detail, ": dead-lettered"));
}

/* The sentence over the Recovery section: sagas by outcome, and how soon after a restart. */
static void recovery_summary(const report_scenario_t *s, char *out, size_t cap)
{
    size_t claimed = 0, compensated = 0, incomplete = 0, committed = 0, ended = 0;
    for (size_t i = 0; i < s->n_recoveries; i++) {
        const report_recovery_t *r = &s->recoveries[i];
        if (strcmp(r->event, "claimed") == 0)
            claimed++;
        if (strcmp(r->event, "ended") != 0)
            continue;
        ended++;
        compensated += has_prefix(r->detail, "outcome compensated");
        incomplete += has_prefix(r->detail, "outcome incomplete");
        committed += has_prefix(r->detail, "outcome committed");
    }
    size_t recovered = compensated + incomplete;
    int n;
    if (s->n_recoveries == 0)
        n = snprintf(out, cap, "Nothing was recovered: no instance left a saga unfinished.");
    else if (ended == 0)
        n = snprintf(out, cap, "%zu saga%s claimed, none ended by recovery before the story did.", claimed,
                     claimed == 1 ? "" : "s");
    else
        n = snprintf(out, cap, "%zu saga%s ended by recovery: %zu compensated, %zu incomplete; %zu found already "
                               "committed (nothing to undo).",
                     recovered, recovered == 1 ? "" : "s", compensated, incomplete, committed);
    char after[128];
    recovery_after(s, after, sizeof after);
    if (n > 0 && (size_t)n < cap && after[0] != '\0')
        snprintf(out + n, cap - (size_t)n, " The first saga ended %s.", after);
}

/* A file-name-safe copy of s: [A-Za-z0-9._-], others become '_'. */
static void safe_part(char *out, size_t cap, const char *s)
{
    size_t len = 0;
    for (; s != NULL && *s != '\0' && len + 1 < cap && len < 100; s++) {
        char c = *s;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_' || (c == '.' && len > 0);
        out[len++] = ok ? c : '_';
    }
    out[len] = '\0';
}

typedef char page_base_t[240];

/* <group>-<name> (or <name>), unique within the run and never "index". */
static void page_bases(const report_scenario_t *s, size_t n, page_base_t *bases)
{
    for (size_t i = 0; i < n; i++) {
        char g[110], nm[110], base[230];
        safe_part(g, sizeof g, group_of(&s[i]));
        safe_part(nm, sizeof nm, name_of(&s[i]));
        snprintf(base, sizeof base, "%s%s%s", g, g[0] != '\0' ? "-" : "", nm);
        if (strcmp(base, "index") == 0)
            snprintf(base, sizeof base, "scenario-index");
        snprintf(bases[i], sizeof bases[i], "%s", base);
        for (unsigned k = 2;; k++) {
            bool taken = false;
            for (size_t j = 0; j < i && !taken; j++)
                taken = strcmp(bases[j], bases[i]) == 0;
            if (!taken)
                break;
            snprintf(bases[i], sizeof bases[i], "%s-%u", base, k);
        }
    }
}

/* ---- Markdown ------------------------------------------------------------ */

/* The colour of the band (a Mermaid rect) behind an entry, or NULL for
 * none: each kind of box has the colour it has in the HTML page. */
static const char *mermaid_band(const timeline_entry_t *e)
{
    switch (e->kind) {
    case TL_RECOVERY: return e->error ? "rgb(255, 236, 214)" : "rgb(214, 240, 237)";
    case TL_FIRED: return "rgb(255, 205, 210)";
    case TL_TIMEOUT: return "rgb(255, 236, 179)";
    case TL_RESTART:
    case TL_RESUME: return "rgb(227, 242, 253)";
    case TL_RELEASE: return "rgb(239, 235, 233)";
    case TL_HEAL: return "rgb(232, 245, 233)";
    case TL_FAULT: return "rgb(255, 228, 228)";
    case TL_NOTE:
    case TL_ARM: return NULL;
    case TL_CALL:
    case TL_REPLY:
    case TL_COMPENSATION:
    case TL_EVENT:
    case TL_DEAD_LETTER:
    default: return e->error ? "rgb(255, 228, 228)" : NULL;
    }
}

static void md_diagram(text_t *t, const story_t *st)
{
    text_puts(t, "```mermaid\nsequenceDiagram\n");
    for (size_t i = 0; i < st->n_parts; i++) {
        if (strcmp(st->ids[i], st->parts[i]) == 0) {
            text_printf(t, "    participant %s\n", st->ids[i]);
        } else {
            text_printf(t, "    participant %s as ", st->ids[i]);
            put_esc(t, st->parts[i], ESC_MERMAID, 0);
            text_puts(t, "\n");
        }
    }
    const char *first = st->ids[0], *last = st->ids[st->n_parts - 1];
    const char *span_sep = st->n_parts > 1 ? "," : "";
    const char *span_last = st->n_parts > 1 ? last : "";
    if (st->n_shown < st->n + st->dropped)
        text_printf(t, "    Note over %s%s%s: showing %zu of %zu entries\n", first, span_sep, span_last, st->n_shown,
                    st->n + st->dropped);
    if (st->n == 0)
        text_printf(t, "    Note over %s: nothing was recorded\n", first);
    size_t skipped = 0;
    for (size_t i = 0; i <= st->n; i++) {
        if (i < st->n && !st->shown[i]) {
            skipped++;
            continue;
        }
        if (skipped > 0)
            text_printf(t, "    Note over %s%s%s: ... %zu entr%s left out ...\n", first, span_sep, span_last, skipped,
                        skipped == 1 ? "y" : "ies");
        skipped = 0;
        if (i == st->n)
            break;
        const timeline_entry_t *e = &st->items[i];
        const char *a, *b;
        entry_ends(e, &a, &b);
        const char *ia = st->ids[part_index(st, a)], *ib = st->ids[part_index(st, b)];
        char label[256];
        display_label(e, label, sizeof label);
        const char *band = mermaid_band(e);
        bool highlight = band != NULL;
        if (highlight)
            text_printf(t, "    rect %s\n", band);
        text_puts(t, highlight ? "        " : "    ");
        switch (e->kind) {
        case TL_CALL:
        case TL_COMPENSATION: text_printf(t, "%s->>%s: ", ia, ib); break;
        case TL_REPLY: text_printf(t, "%s-->>%s: ", ia, ib); break;
        case TL_EVENT: text_printf(t, "%s-)%s: ", ia, ib); break;
        default: text_printf(t, "Note over %s: ", ia); break;
        }
        line_span_t lines[MAX_LINES];
        size_t n_lines = wrap_lines(label, MERMAID_LINE, lines, MAX_LINES);
        for (size_t k = 0; k < n_lines; k++) {
            char line[sizeof label];
            line_text(label, &lines[k], line, sizeof line);
            text_puts(t, k > 0 ? "<br/>" : "");
            put_esc(t, line, ESC_MERMAID, 0);
        }
        text_puts(t, "\n");
        if (highlight)
            text_puts(t, "    end\n");
    }
    if (st->dropped > 0)
        text_printf(t, "    Note over %s%s%s: %zu more entries were not recorded (timeline full)\n", first, span_sep,
                    span_last, st->dropped);
    text_puts(t, "```\n");
}

/* The Recovery section of a durable story (or of any story that saw recovery). */
static void md_recovery(text_t *t, const report_scenario_t *s)
{
    if (!s->durable && s->n_recoveries == 0)
        return;
    char summary[512];
    recovery_summary(s, summary, sizeof summary);
    text_puts(t, "\n## Recovery\n\n");
    put_esc(t, summary, ESC_MD_TEXT, 0);
    text_puts(t, "\n");
    if (s->n_recoveries == 0)
        return;
    text_puts(t, "\n| Time (ms) | Instance | Step | Call | What happened |\n|---:|---|---|---|---|\n");
    for (size_t i = 0; i < s->n_recoveries; i++) {
        const report_recovery_t *r = &s->recoveries[i];
        bool bad = recovery_bad(r), ended = strcmp(r->event, "ended") == 0;
        text_printf(t, "| %.1f | ", (double)r->t_us / 1000.0);
        put_esc(t, r->instance, ESC_MD_CELL, 0);
        text_puts(t, ended || bad ? " | **" : " | ");
        put_esc(t, r->event, ESC_MD_CELL, 0);
        text_puts(t, ended || bad ? "** | " : " | ");
        put_esc(t, r->call_id, ESC_MD_CELL, 0);
        text_puts(t, " | ");
        put_esc(t, r->detail, ESC_MD_CELL, 0);
        text_puts(t, " |\n");
    }
}

static void md_scenario(text_t *t, const report_scenario_t *s, const story_t *st)
{
    size_t failed = checks_failed(s);
    text_puts(t, "# ");
    if (group_of(s)[0] != '\0') {
        put_esc(t, group_of(s), ESC_MD_TEXT, 0);
        text_puts(t, " / ");
    }
    put_esc(t, name_of(s), ESC_MD_TEXT, 0);
    story_state_t state = state_of(s);
    text_printf(t, "\n\n[All scenarios](index.md)\n\n**%s**: %zu of %zu check%s passed.\n\n",
                state == STATE_FAIL ? "FAIL" : state == STATE_EXPECTED_VIOLATION ? "EXPECTED VIOLATION" : "PASS",
                s->n_checks - failed, s->n_checks, s->n_checks == 1 ? "" : "s");
    char lesson[800];
    violation_sentence(s, lesson, sizeof lesson);
    if (lesson[0] != '\0') {
        put_esc(t, lesson, ESC_MD_TEXT, 0);
        text_puts(t, "\n\n");
    }
    if (s->about != NULL && s->about[0] != '\0') {
        put_esc(t, s->about, ESC_MD_TEXT, 0);
        text_puts(t, "\n\n");
    }
    text_printf(t, "| | |\n|---|---|\n| Seed | %llu |\n| Duration | %.2f s |\n| Mode | %s |\n", s->seed,
                s->duration_s, mode_of(s));
    if (s->n_violations > 0) {
        char names[600];
        violations_text(s, names, sizeof names);
        text_puts(t, "| Expected violation | ");
        put_esc(t, names, ESC_MD_CELL, 0);
        text_puts(t, " |\n");
    }
    char after[128];
    recovery_after(s, after, sizeof after);
    if (after[0] != '\0')
        text_printf(t, "| Recovery | %s |\n", after); /* service names: no Markdown syntax in them */
    if (s->path != NULL) {
        text_puts(t, "| File | ");
        put_esc(t, s->path, ESC_MD_CELL, 0);
        text_puts(t, " |\n");
    }
    text_puts(t, "\nReplay:\n\n");
    put_fence(t, s->replay);
    text_puts(t, "sh\n");
    text_puts(t, s->replay != NULL ? s->replay : "");
    text_puts(t, "\n");
    put_fence(t, s->replay);
    text_puts(t, "\n\n## Checks\n\n");
    if (s->n_checks == 0) {
        text_puts(t, "No checks.\n");
    } else {
        text_puts(t, "| Result | Check | Detail |\n|---|---|---|\n");
        for (size_t i = 0; i < s->n_checks; i++) {
            const report_check_t *c = &s->checks[i];
            text_puts(t, c->ok ? "| ok | " : "| **FAIL** | ");
            put_esc(t, c->name, ESC_MD_CELL, 0);
            text_puts(t, " | ");
            put_esc(t, c->detail, ESC_MD_CELL, 0);
            text_puts(t, " |\n");
        }
    }
    md_recovery(t, s);
    text_puts(t, "\n## Sequence\n\n");
    text_puts(t, "Rows are in the order things happened, by the clock of the service where they happened (the lab's "
                 "for its own steps). A note says what it is by its first word: FAULT (the lab caused it), FIRED (a "
                 "fault point fired in that service), TIMEOUT (the lab gave up on a call), ARM (a fault point "
                 "enabled), RESTART, RESUME, RELEASE (a fault point disabled), HEAL (a link back to normal), "
                 "RECOVERY, dead letter.\n\n");
    if (st->n_shown < st->n)
        text_printf(t, "Showing %zu of %zu entries: every fault, compensation, dead letter, recovery step and error, "
                       "the notes, then the first of the plain calls, replies and events.\n\n", st->n_shown, st->n);
    md_diagram(t, st);
    if (s->log_excerpt != NULL && s->log_excerpt[0] != '\0') {
        text_puts(t, "\n## Service logs\n\n");
        put_fence(t, s->log_excerpt);
        text_puts(t, "text\n");
        text_puts(t, s->log_excerpt);
        if (s->log_excerpt[strlen(s->log_excerpt) - 1] != '\n')
            text_puts(t, "\n");
        put_fence(t, s->log_excerpt);
        text_puts(t, "\n");
    }
}

/* The counts of a run, for both summaries. */
typedef struct run_counts {
    size_t ok, expected_violation, failed; /* stories by state       */
    size_t checks, failed_checks;
    double total_s;
} run_counts_t;

static run_counts_t count_run(const report_scenario_t *s, size_t n)
{
    run_counts_t c = {0};
    for (size_t i = 0; i < n; i++) {
        story_state_t st = state_of(&s[i]);
        c.ok += st == STATE_OK;
        c.expected_violation += st == STATE_EXPECTED_VIOLATION;
        c.failed += st == STATE_FAIL;
        c.failed_checks += checks_failed(&s[i]);
        c.checks += s[i].n_checks;
        c.total_s += s[i].duration_s;
    }
    return c;
}

/* The run in two sentences: "3 scenarios ran: 1 passed, 1 showed the violation it expects, and 1 failed.
 * 40 of 41 checks passed; the stories took 2.0 s in all." -- the sum of their durations: with one
 * story per core at once the run itself was shorter, so the sentence does not call it the run's time. */
static void run_sentence(const run_counts_t *c, size_t n, char *out, size_t cap)
{
    char lessons[96] = "";
    if (c->expected_violation > 0)
        snprintf(lessons, sizeof lessons, " %zu showed the violation %s,", c->expected_violation,
                 c->expected_violation == 1 ? "it expects" : "they expect");
    if (n == 0)
        snprintf(out, cap, "No scenario ran.");
    else
        snprintf(out, cap, "%zu scenario%s ran: %zu passed,%s and %zu failed. %zu of %zu check%s passed; the stories took %.1f s in all.", n,
                 n == 1 ? "" : "s", c->ok, lessons, c->failed, c->checks - c->failed_checks, c->checks,
                 c->checks == 1 ? "" : "s", c->total_s);
}

static void md_index(text_t *t, const report_scenario_t *s, size_t n, page_base_t *bases)
{
    run_counts_t c = count_run(s, n);
    char sentence[300];
    run_sentence(&c, n, sentence, sizeof sentence);
    text_printf(t, "# natomic lab report\n\n%s\n\n", sentence);
    text_puts(t, "| Result | Group | Scenario | About | Expected violation | Checks | Duration | Mode | Seed |\n"
                 "|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        size_t f = checks_failed(&s[i]);
        story_state_t st = state_of(&s[i]);
        char about[2048], names[600];
        first_sentence(s[i].about, about, sizeof about);
        violations_text(&s[i], names, sizeof names);
        text_printf(t, st == STATE_OK ? "| %s | " : "| **%s** | ", state_word(st));
        put_esc(t, group_of(&s[i]), ESC_MD_CELL, 0);
        text_puts(t, " | [");
        put_esc(t, name_of(&s[i]), ESC_MD_CELL, 0);
        text_printf(t, "](%s.md) | ", bases[i]);
        put_esc(t, about, ESC_MD_CELL, 0);
        text_puts(t, " | ");
        put_esc(t, names, ESC_MD_CELL, 0);
        char after[128];
        recovery_after(&s[i], after, sizeof after);
        text_printf(t, " | %zu passed, %zu failed | %.2f s | %s%s%s | %llu |\n", s[i].n_checks - f, f,
                    s[i].duration_s, mode_of(&s[i]), after[0] != '\0' ? "<br>recovery " : "", after, s[i].seed);
    }
}

/* ---- HTML ---------------------------------------------------------------- */

/* Two pieces: ISO C promises string literals of 4095 bytes only. */
static const char *const page_css[] = {
    ":root{--ink:#1f2933;--muted:#616e7c;--line:#d9e2ec;--ok:#1b7f3b;--okbg:#e6f4ea;--bad:#c62828;"
    "--badbg:#fdecea;--comp:#d35400;--evt:#7b1fa2;--xv:#8a4b00;--xvbg:#fff1db}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;padding:20px 28px 40px;color:var(--ink);background:#fff;"
    "font:14px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}\n"
    "code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono','Liberation Mono',"
    "monospace;font-size:12.5px}\n"
    "a{color:#1a5fb4}\n"
    "nav{font-size:13px;margin-bottom:10px;color:var(--muted)}\n"
    "nav a{margin-right:14px}\n"
    "h1{font-size:22px;margin:4px 0 8px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}\n"
    "h1 .grp{color:var(--muted);font-weight:500}\n"
    "h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}\n"
    ".badge{display:inline-block;font-size:12px;font-weight:700;letter-spacing:.04em;padding:2px 8px;"
    "border-radius:10px;color:#fff;background:var(--ok)}\n"
    ".badge.fail{background:var(--bad)}.badge.xv{background:#c77700}\n"
    ".about{max-width:62em;white-space:pre-line;margin:6px 0 12px;font-size:15px}\n"
    ".meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0 0 8px}\n"
    ".meta dt{color:var(--muted)}.meta dd{margin:0}\n"
    "pre{background:#f5f7fa;border:1px solid var(--line);border-radius:6px;padding:8px 12px;overflow:auto;"
    "margin:4px 0}\n"
    "pre.log{max-height:28em}\n"
    "table{border-collapse:collapse}\n"
    "th,td{text-align:left;vertical-align:top;padding:4px 10px;border-bottom:1px solid var(--line)}\n"
    "th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}\n"
    "tr.ok td.res{color:var(--ok);font-weight:700}\n"
    "tr.fail{background:var(--badbg)}\n"
    "tr.fail td.res{color:var(--bad);font-weight:700}\n"
    "table.checks tr.ok{background:var(--okbg)}\n"
    "td.detail{white-space:pre-wrap;max-width:60em}\n"
    ".note{color:var(--muted);font-size:13px;margin:4px 0 8px}\n"
    ".legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:12.5px;color:var(--muted);margin:0 0 10px}\n"
    ".legend span{display:inline-flex;align-items:center;gap:6px}\n"
    ".ln{display:inline-block;width:28px;border-top:2px solid #263238}\n"
    ".ln.reply{border-top-style:dashed}.ln.err{border-top-color:var(--bad)}\n"
    ".ln.comp{border-top-color:var(--comp)}.ln.evt{border-top-color:var(--evt)}\n"
    ".bx{display:inline-block;width:22px;height:13px;border-radius:3px;border:1px solid}\n"
    ".bx.fault{background:#d32f2f;border-color:#b71c1c}.bx.heal{background:#e8f5e9;border-color:#43a047}\n"
    ".bx.dead{background:#fff5f5;border:1px dashed #c62828}.bx.note{background:#eceff1;border-color:#b0bec5}\n"
    ".bx.recov{background:#d6f0ed;border:2px solid #00796b}\n"
    ".bx.timeout{background:#ffe082;border-color:#ff8f00}.bx.arm{background:#fff;border:1px dotted #d32f2f}\n"
    ".bx.restart{background:#e3f2fd;border-color:#1565c0}.bx.resume{background:#e3f2fd;border:1px dashed #1565c0}\n"
    ".bx.release{background:#efebe9;border-color:#6d4c41}.bx.err{background:#ffebee;border-color:#c62828}\n"
    ".legend svg.sw{display:inline-block;vertical-align:middle}\n"
    ".seq{width:100%;max-height:85vh;overflow:auto;border:1px solid var(--line);border-radius:6px}\n",
    ".seq svg{display:block;width:100%;height:auto}\n"
    ".seqhead{position:sticky;top:0;z-index:2}\n"
    "svg text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono','Liberation Mono',"
    "monospace;font-size:12px}\n"
    "svg text.pname{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;font-size:13px;"
    "font-weight:700}\n"
    "svg .tm{fill:#7b8794;font-size:11px}\n"
    "svg .al{paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}\n"
    "svg .call{stroke:#263238;fill:#263238}svg text.call{stroke:#fff}\n"
    "svg .err{stroke:#c62828;fill:#c62828}svg text.err{stroke:#fff;font-weight:700}\n"
    "svg .comp{stroke:#d35400;fill:#d35400}svg text.comp{stroke:#fff}\n"
    "svg .evt{stroke:#7b1fa2;fill:#7b1fa2}svg text.evt{stroke:#fff}\n"
    "svg line.call,svg line.err,svg line.comp,svg line.evt,svg path.loop{fill:none;stroke-width:1.5}\n"
    "svg .dash{stroke-dasharray:6 4}\n"
    "svg .b-fault rect{fill:#d32f2f;stroke:#b71c1c}svg .b-fault text{fill:#fff;font-weight:700}\n"
    "svg .b-heal rect{fill:#e8f5e9;stroke:#43a047}svg .b-heal text{fill:#1b5e20}\n"
    "svg .b-dead rect{fill:#fff5f5;stroke:#c62828;stroke-dasharray:4 3}svg .b-dead text{fill:#b71c1c;"
    "font-weight:700}\n"
    "svg .b-note rect{fill:#eceff1;stroke:#b0bec5}svg .b-note text{fill:#37474f}\n"
    "svg .b-err rect{fill:#ffebee;stroke:#c62828}svg .b-err text{fill:#b71c1c;font-weight:700}\n"
    "svg .b-recov rect{fill:#d6f0ed;stroke:#00796b;stroke-width:2}svg .b-recov text{fill:#004d40;font-weight:600}\n"
    "svg .b-recov.bad rect{fill:#fff0e0;stroke:#e65100}svg .b-recov.bad text{fill:#bf360c}\n"
    "svg .b-fired rect{fill:#fff;stroke:#d32f2f;stroke-width:2}svg .b-fired text{fill:#b71c1c;font-weight:700}\n"
    "svg .burst{fill:#d32f2f;stroke:#fff;stroke-width:1}\n"
    "svg .b-timeout rect{fill:#ffe082;stroke:#ff8f00;stroke-width:1.5}svg .b-timeout text{fill:#4e2c00;"
    "font-weight:700}\n"
    "svg .b-arm rect{fill:#fff;stroke:#d32f2f;stroke-dasharray:1 3}svg .b-arm text{fill:#b71c1c}\n"
    "svg .b-restart rect{fill:#e3f2fd;stroke:#1565c0}svg .b-restart text{fill:#0d47a1;font-weight:600}\n"
    "svg .b-resume rect{fill:#e3f2fd;stroke:#1565c0;stroke-dasharray:5 3}svg .b-resume text{fill:#0d47a1}\n"
    "svg .b-release rect{fill:#efebe9;stroke:#6d4c41}svg .b-release text{fill:#3e2723}\n"
    "table.recovery td.when{text-align:right;color:var(--muted)}\n"
    "table.recovery tr.ended{background:#e8f5f3}table.recovery tr.ended td{font-weight:600}\n"
    "table.recovery tr.bad{background:var(--badbg)}\n"
    ".recov-sum{max-width:62em;margin:4px 0 10px}.run-sum{max-width:62em;margin:4px 0 10px;font-size:15px}\n"
    "svg .gap text{fill:#7b8794;font-style:italic}\n"
    "table.index td.about{max-width:42em}\n"
    ".totals{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0 18px}\n"
    ".tile{border:1px solid var(--line);border-radius:8px;padding:8px 16px;min-width:120px}\n"
    ".tile b{display:block;font-size:22px;line-height:1.2}\n"
    ".tile.ok b{color:var(--ok)}.tile.fail b{color:var(--bad)}.tile.xv b{color:var(--xv)}\n"
    "tr.xv{background:var(--xvbg)}tr.xv td.res{color:var(--xv);font-weight:700}\n"
    "td.xv{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace;font-size:12.5px}\n"
    ".xv-sum{max-width:62em;margin:4px 0 10px;padding:6px 10px;border-left:4px solid #c77700;"
    "background:var(--xvbg)}\n",
};

static void html_head(text_t *t, const char *title_a, const char *title_b)
{
    text_puts(t, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                 "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    put_esc(t, title_a, ESC_HTML_LINE, 0);
    put_esc(t, title_b, ESC_HTML_LINE, 0);
    text_puts(t, "</title>\n<style>\n");
    for (size_t i = 0; i < sizeof page_css / sizeof page_css[0]; i++)
        text_puts(t, page_css[i]);
    text_puts(t, "</style>\n</head>\n<body>\n");
}

static double text_w(const char *s, double char_w)
{
    return (double)utf8_chars(s) * char_w;
}

static size_t fit_chars(double room, double char_w)
{
    double n = room / char_w;
    return n < 4 ? 4 : (size_t)n;
}

static void svg_text(text_t *t, const char *cls, double x, double y, const char *anchor, const char *s,
                     size_t max_chars);

/* The lifelines' x and the drawing's width, from the labels it carries. */
typedef struct geometry {
    double x[MAX_PARTS];
    double box_w[MAX_PARTS];
    double width;
    double height;
} geometry_t;

static double note_width(const char *label)
{
    double w = text_w(label, CHAR_W) + 20;
    return w < NOTE_MAX_W ? w : NOTE_MAX_W;
}

static double note_left(double x, double w)
{
    double left = x - w / 2;
    return left < TIME_W + 6 ? TIME_W + 6 : left;
}

static double row_h(size_t lines)
{
    return ROW_H + (double)(lines > 0 ? lines - 1 : 0) * LINE_H;
}

/* How the label of a drawn entry wraps in the room it has once the
 * lifelines are placed: its lines into lines[MAX_LINES]; returns their number. */
static size_t entry_wrap(const story_t *st, const geometry_t *g, const timeline_entry_t *e, const char *label,
                         line_span_t *lines)
{
    const char *a, *b;
    entry_ends(e, &a, &b);
    int ia = part_index(st, a), ib = part_index(st, b);
    assert(ia >= 0 && ib >= 0); /* story_select draws nothing else */
    double room;
    if (!is_arrow(e->kind))
        room = note_width(label) - 18;
    else if (ia == ib)
        room = ((size_t)ia + 1 < st->n_parts ? g->x[ia + 1] : g->width) - g->x[ia] - LOOP_W - 18;
    else
        room = (g->x[ia] < g->x[ib] ? g->x[ib] - g->x[ia] : g->x[ia] - g->x[ib]) - 20;
    return wrap_lines(label, fit_chars(room, CHAR_W), lines, MAX_LINES);
}

/* Each line of a wrapped label as a <text>, the first at y, the next LINE_H lower. */
static void svg_lines(text_t *t, const char *cls, double x, double y, const char *anchor, const char *label,
                      const line_span_t *lines, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        char line[256];
        line_text(label, &lines[k], line, sizeof line);
        svg_text(t, cls, x, y + (double)k * LINE_H, anchor, line, 0);
    }
}

static void layout(const story_t *st, geometry_t *g)
{
    size_t np = st->n_parts;
    double gap[MAX_PARTS], base[MAX_PARTS];
    for (size_t i = 0; i < np; i++) {
        double w = text_w(st->parts[i], NAME_CHAR_W) + 28;
        g->box_w[i] = w < 100 ? 100 : w > MAX_GAP - 20 ? MAX_GAP - 20 : w;
    }
    for (size_t k = 0; k + 1 < np; k++) {
        double need = (g->box_w[k] + g->box_w[k + 1]) / 2 + 24;
        gap[k] = base[k] = need > MIN_GAP ? need : MIN_GAP;
    }
    double right_need = g->box_w[np - 1] / 2 + 20;
    /* Two passes: neighbours first, then labels spanning several gaps. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < st->n; i++) {
            const timeline_entry_t *e = &st->items[i];
            if (!st->shown[i] || !is_arrow(e->kind))
                continue;
            const char *a, *b;
            entry_ends(e, &a, &b);
            int ia = part_index(st, a), ib = part_index(st, b);
            char label[256];
            display_label(e, label, sizeof label);
            double lw = text_w(label, CHAR_W);
            if (ia == ib) {
                double need = LOOP_W + 18 + lw;
                if ((size_t)ia + 1 < np) {
                    if (pass == 0 && gap[ia] < need)
                        gap[ia] = need < MAX_GAP ? need : MAX_GAP;
                } else if (right_need < need) {
                    right_need = need < MAX_GAP ? need : MAX_GAP;
                }
                continue;
            }
            size_t lo = (size_t)(ia < ib ? ia : ib), hi = (size_t)(ia < ib ? ib : ia);
            double need = lw + 28, have = 0;
            for (size_t k = lo; k < hi; k++)
                have += gap[k];
            if ((pass == 0) != (hi - lo == 1) || need <= have)
                continue;
            double extra = (need - have) / (double)(hi - lo);
            for (size_t k = lo; k < hi; k++)
                gap[k] = gap[k] + extra < MAX_GAP ? gap[k] + extra : (gap[k] > MAX_GAP ? gap[k] : MAX_GAP);
        }
    }
    double first_half = g->box_w[0] / 2 > 80 ? g->box_w[0] / 2 : 80;
    g->x[0] = TIME_W + 16 + first_half;
    /* Fit a common screen rather than every label: the room labels added
     * to the gaps is capped at one level, found by bisection, so short
     * labels keep theirs and only the longest are cut (their full text
     * stays in the tooltip). */
    double fixed = g->x[0] + right_need, extra = 0, widest = 0;
    for (size_t k = 0; k + 1 < np; k++) {
        fixed += base[k];
        extra += gap[k] - base[k];
        if (gap[k] - base[k] > widest)
            widest = gap[k] - base[k];
    }
    if (fixed + extra > FIT_W) {
        double lo = 0, hi = widest;
        for (int it = 0; it < 40; it++) {
            double level = (lo + hi) / 2, used = 0;
            for (size_t k = 0; k + 1 < np; k++)
                used += gap[k] - base[k] < level ? gap[k] - base[k] : level;
            if (fixed + used > FIT_W)
                hi = level;
            else
                lo = level;
        }
        for (size_t k = 0; k + 1 < np; k++)
            if (gap[k] - base[k] > lo)
                gap[k] = base[k] + lo;
    }
    for (size_t k = 1; k < np; k++)
        g->x[k] = g->x[k - 1] + gap[k - 1];
    double right = g->x[np - 1] + right_need;
    /* Boxes over a lifeline may reach further right than the last column. */
    g->height = 8;
    size_t skipped = 0;
    for (size_t i = 0; i <= st->n; i++) {
        if (i < st->n && !st->shown[i]) {
            skipped++;
            continue;
        }
        if (skipped > 0)
            g->height += GAP_ROW_H;
        skipped = 0;
        if (i == st->n)
            break;
        g->height += ROW_H;
        const timeline_entry_t *e = &st->items[i];
        if (is_arrow(e->kind))
            continue;
        const char *a, *b;
        entry_ends(e, &a, &b);
        char label[256];
        display_label(e, label, sizeof label);
        double w = note_width(label);
        double x = g->x[part_index(st, a)];
        if (note_left(x, w) + w + 12 > right)
            right = note_left(x, w) + w + 12;
    }
    if (st->n == 0)
        g->height += ROW_H;
    g->height += 12;
    g->width = right;
    /* The width is known: now the lines each label wraps onto, and the rows they need. */
    for (size_t i = 0; i < st->n; i++) {
        if (!st->shown[i])
            continue;
        char label[256];
        line_span_t lines[MAX_LINES];
        display_label(&st->items[i], label, sizeof label);
        g->height += row_h(entry_wrap(st, g, &st->items[i], label, lines)) - ROW_H;
    }
}

static void svg_text(text_t *t, const char *cls, double x, double y, const char *anchor, const char *s,
                     size_t max_chars)
{
    text_printf(t, "<text class=\"%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">", cls, x, y, anchor);
    put_esc(t, s, ESC_HTML_LINE, max_chars);
    text_puts(t, "</text>");
}

static void svg_header(text_t *t, const story_t *st, const geometry_t *g)
{
    text_printf(t, "<div class=\"seqhead\"><svg width=\"%.0f\" height=\"%.0f\" "
                   "viewBox=\"0 0 %.0f %.0f\" style=\"min-width:%.0fpx\" role=\"img\" aria-label=\"participants\">",
                g->width, HEAD_H, g->width, HEAD_H, g->width * MIN_SCALE);
    text_printf(t, "<rect width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>", g->width, HEAD_H);
    text_printf(t, "<line x1=\"0\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#d9e2ec\"/>", HEAD_H - 0.5, g->width,
                HEAD_H - 0.5);
    svg_text(t, "tm", TIME_W - 10, 28, "end", "ms", 0);
    for (size_t i = 0; i < st->n_parts; i++) {
        const char *fill = "#e3ecfa", *stroke = "#5b7db1", *ink = "#1f2933";
        if (strcmp(st->parts[i], "lab") == 0) {
            fill = "#37474f";
            stroke = "#263238";
            ink = "#fff";
        } else if (strcmp(st->parts[i], "events") == 0) {
            fill = "#f3e5f5";
            stroke = "#7b1fa2";
            ink = "#4a148c";
        }
        double x = g->x[i], w = g->box_w[i];
        text_printf(t, "<line x1=\"%.1f\" y1=\"36\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#b8c2cc\" stroke-dasharray=\"4 4\"/>",
                    x, x, HEAD_H);
        text_printf(t, "<rect x=\"%.1f\" y=\"6\" width=\"%.1f\" height=\"30\" rx=\"6\" fill=\"%s\" stroke=\"%s\"/>",
                    x - w / 2, w, fill, stroke);
        text_printf(t, "<text class=\"pname\" x=\"%.1f\" y=\"26\" text-anchor=\"middle\" fill=\"%s\">", x, ink);
        put_esc(t, st->parts[i], ESC_HTML_LINE, fit_chars(w - 16, NAME_CHAR_W));
        text_puts(t, "</text>");
    }
    text_puts(t, "</svg></div>\n");
}

static void svg_defs(text_t *t)
{
    static const struct {
        const char *id, *color;
        bool open;
    } heads[] = {{"ah-call", "#263238", false}, {"ah-err", "#c62828", false}, {"ah-comp", "#d35400", false},
                 {"ah-evt", "#7b1fa2", true}};
    text_puts(t, "<defs>");
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        text_printf(t, "<marker id=\"%s\" viewBox=\"0 0 10 10\" refX=\"9.5\" refY=\"5\" markerWidth=\"7\" "
                       "markerHeight=\"7\" orient=\"auto-start-reverse\" markerUnits=\"strokeWidth\">",
                    heads[i].id);
        if (heads[i].open)
            text_printf(t, "<path d=\"M1,1 L9.5,5 L1,9\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\"/>",
                        heads[i].color);
        else
            text_printf(t, "<path d=\"M0,0.5 L10,5 L0,9.5 z\" fill=\"%s\"/>", heads[i].color);
        text_puts(t, "</marker>");
    }
    text_puts(t, "</defs>");
}

/* The class of a box, which gives it its colour (page_css). */
static const char *box_class(const timeline_entry_t *e)
{
    switch (e->kind) {
    case TL_FAULT: return "b-fault";
    case TL_FIRED: return "b-fired";
    case TL_TIMEOUT: return "b-timeout";
    case TL_ARM: return "b-arm";
    case TL_RESTART: return "b-restart";
    case TL_RESUME: return "b-resume";
    case TL_RELEASE: return "b-release";
    case TL_HEAL: return "b-heal";
    case TL_DEAD_LETTER: return "b-dead";
    case TL_RECOVERY: return e->error ? "b-recov bad" : "b-recov";
    case TL_NOTE:
    case TL_CALL:
    case TL_REPLY:
    case TL_COMPENSATION:
    case TL_EVENT:
    default: return e->error ? "b-err" : "b-note";
    }
}

/* The mark of a fired fault: an eight-pointed burst centred at (x, y). */
static void svg_burst(text_t *t, double x, double y)
{
    static const double pts[16][2] = {{0, -9},   {2.3, -5.5}, {6.4, -6.4}, {5.5, -2.3}, {9, 0},    {5.5, 2.3},
                                      {6.4, 6.4}, {2.3, 5.5},  {0, 9},     {-2.3, 5.5}, {-6.4, 6.4}, {-5.5, 2.3},
                                      {-9, 0},   {-5.5, -2.3}, {-6.4, -6.4}, {-2.3, -5.5}};
    text_puts(t, "<polygon class=\"burst\" points=\"");
    for (size_t k = 0; k < 16; k++)
        text_printf(t, "%s%.1f,%.1f", k > 0 ? " " : "", x + pts[k][0], y + pts[k][1]);
    text_puts(t, "\"/>");
}

/* Draws one entry as a row whose top is at `top`; returns the row's height. */
static double svg_row(text_t *t, const story_t *st, const geometry_t *g, const timeline_entry_t *e, double top)
{
    const char *a, *b;
    entry_ends(e, &a, &b);
    int ia = part_index(st, a), ib = part_index(st, b);
    char label[256];
    display_label(e, label, sizeof label);
    line_span_t lines[MAX_LINES];
    size_t n_lines = entry_wrap(st, g, e, label, lines);
    double h = row_h(n_lines), more = h - ROW_H;
    char when[32];
    snprintf(when, sizeof when, "%.1f", (double)e->t_us / 1000.0);

    text_puts(t, "<g><title>");
    text_printf(t, "%s ms  ", when);
    put_esc(t, a, ESC_HTML_LINE, 0);
    if (is_arrow(e->kind)) {
        text_puts(t, " &#8594; ");
        put_esc(t, b, ESC_HTML_LINE, 0);
    }
    text_puts(t, ": ");
    put_esc(t, label, ESC_HTML_LINE, 0);
    text_puts(t, "</title>");
    svg_text(t, "tm", TIME_W - 10, top + 19, "end", when, 0);

    if (is_arrow(e->kind)) {
        const char *cls = e->error ? "err" : e->kind == TL_COMPENSATION ? "comp" : e->kind == TL_EVENT ? "evt" : "call";
        const char *dash = e->kind == TL_REPLY ? " dash" : "";
        double xa = g->x[ia], xb = g->x[ib], y = top + 22 + more; /* the label's lines above the arrow */
        char lcls[32];
        snprintf(lcls, sizeof lcls, "al %s", cls);
        if (ia == ib) {
            text_printf(t, "<path class=\"loop %s%s\" d=\"M%.1f,%.1f H%.1f V%.1f H%.1f\" "
                           "marker-end=\"url(#ah-%s)\"/>",
                        cls, dash, xa, top + 9, xa + LOOP_W, top + 25, xa + 2, cls);
            svg_lines(t, lcls, xa + LOOP_W + 8, top + 20, "start", label, lines, n_lines);
        } else {
            text_printf(t, "<line class=\"%s%s\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                           "marker-end=\"url(#ah-%s)\"/>",
                        cls, dash, xa, y, xb, y, cls);
            svg_lines(t, lcls, (xa + xb) / 2, top + 16, "middle", label, lines, n_lines);
        }
    } else {
        double w = note_width(label), left = note_left(g->x[ia], w);
        text_printf(t, "<g class=\"%s\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" rx=\"4\"/>",
                    box_class(e), left, top + 4, w, h - 8);
        svg_lines(t, "", left + w / 2, top + 19, "middle", label, lines, n_lines);
        if (e->kind == TL_FIRED)
            svg_burst(t, left, top + h / 2);
        text_puts(t, "</g>");
    }
    text_puts(t, "</g>\n");
    return h;
}

static void svg_gap(text_t *t, const geometry_t *g, size_t skipped, double top)
{
    double y = top + GAP_ROW_H / 2;
    text_printf(t, "<g class=\"gap\"><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa5b1\" "
                   "stroke-dasharray=\"2 5\"/>",
                TIME_W, y, g->width, y);
    char msg[96];
    snprintf(msg, sizeof msg, "%zu entr%s not shown", skipped, skipped == 1 ? "y" : "ies");
    text_printf(t, "<text class=\"al\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">&#8230; ", (TIME_W + g->width) / 2,
                y + 4);
    put_esc(t, msg, ESC_HTML_LINE, 0);
    text_puts(t, " &#8230;</text></g>\n");
}

/* What each line and box means; the same words as the labels' prefixes. */
static void html_legend(text_t *t)
{
    static const struct {
        const char *swatch, *what;
    } items[] = {
        {"ln", "call"},
        {"ln reply", "reply"},
        {"ln err", "error"},
        {"ln comp", "compensation (undo)"},
        {"ln evt", "event"},
        {"bx fault", "FAULT the lab caused (kill, pause, cut)"},
        {NULL, "FIRED: a fault point fired in the service"},
        {"bx timeout", "TIMEOUT: the lab gave up on a call"},
        {"bx arm", "ARM: a fault point enabled"},
        {"bx restart", "RESTART"},
        {"bx resume", "RESUME (after a pause)"},
        {"bx release", "RELEASE: a fault point disabled"},
        {"bx heal", "HEAL: a link back to normal"},
        {"bx dead", "dead letter"},
        {"bx recov", "recovery"},
        {"bx note", "note"},
        {"bx err", "failed check"},
    };
    text_puts(t, "<div class=\"legend\">");
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        if (items[i].swatch != NULL) {
            text_printf(t, "<span><i class=\"%s\"></i>", items[i].swatch);
        } else {
            text_puts(t, "<span><svg class=\"sw\" width=\"34\" height=\"20\" viewBox=\"0 0 34 20\" "
                         "aria-hidden=\"true\"><g class=\"b-fired\"><rect x=\"10\" y=\"3\" width=\"22\" height=\"14\" "
                         "rx=\"3\"/>");
            svg_burst(t, 10, 10);
            text_puts(t, "</g></svg>");
        }
        text_printf(t, "%s</span>", items[i].what);
    }
    text_puts(t, "<span>long labels wrap: nothing is cut</span></div>\n");
}

static void html_sequence(text_t *t, const story_t *st)
{
    geometry_t g;
    memset(&g, 0, sizeof g);
    layout(st, &g);
    html_legend(t);
    if (st->n_shown < st->n || st->dropped > 0) {
        text_printf(t, "<p class=\"note\">Showing %zu of %zu entries", st->n_shown, st->n + st->dropped);
        if (st->n_shown < st->n)
            text_puts(t, ": every fault, compensation, dead letter, recovery step and error, the notes, then the "
                         "first of the plain calls, replies and events; dotted lines mark where entries were left out");
        if (st->dropped > 0)
            text_printf(t, "; %zu were not recorded (the timeline was full)", st->dropped);
        text_puts(t, ".</p>\n");
    }
    /* As wide as the page up to the drawing's own width; the drawing scales
     * down with it to MIN_SCALE, then the frame scrolls sideways. */
    text_printf(t, "<div class=\"seq\" style=\"max-width:min(100%%,%.0fpx)\">", g.width + 2);
    svg_header(t, st, &g);
    text_printf(t, "<svg width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" style=\"min-width:%.0fpx\" "
                   "role=\"img\" aria-label=\"sequence diagram\">",
                g.width, g.height, g.width, g.height, g.width * MIN_SCALE);
    svg_defs(t);
    /* Stripes first, then lifelines, then the rows on top. */
    double top = 8;
    size_t skipped = 0, row = 0;
    for (size_t i = 0; i <= st->n; i++) {
        if (i < st->n && !st->shown[i]) {
            skipped++;
            continue;
        }
        if (skipped > 0)
            top += GAP_ROW_H;
        skipped = 0;
        if (i == st->n)
            break;
        char label[256];
        line_span_t lines[MAX_LINES];
        display_label(&st->items[i], label, sizeof label);
        double h = row_h(entry_wrap(st, &g, &st->items[i], label, lines));
        if (row++ % 2 == 1)
            text_printf(t, "<rect x=\"0\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\" fill=\"#f5f7fa\"/>", top, g.width,
                        h);
        top += h;
    }
    text_printf(t, "\n<line x1=\"%.1f\" y1=\"0\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#d9e2ec\"/>", TIME_W, TIME_W,
                g.height);
    for (size_t i = 0; i < st->n_parts; i++)
        text_printf(t, "<line x1=\"%.1f\" y1=\"0\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#b8c2cc\" "
                       "stroke-dasharray=\"4 4\"/>",
                    g.x[i], g.x[i], g.height);
    text_puts(t, "\n");
    top = 8;
    skipped = 0;
    if (st->n == 0)
        svg_text(t, "tm", (TIME_W + g.width) / 2, top + 19, "middle", "nothing was recorded", 0);
    for (size_t i = 0; i <= st->n; i++) {
        if (i < st->n && !st->shown[i]) {
            skipped++;
            continue;
        }
        if (skipped > 0) {
            svg_gap(t, &g, skipped, top);
            top += GAP_ROW_H;
        }
        skipped = 0;
        if (i == st->n)
            break;
        top += svg_row(t, st, &g, &st->items[i], top);
    }
    text_puts(t, "</svg></div>\n");
}

static void html_nav(text_t *t, page_base_t *bases, size_t n, size_t i)
{
    text_puts(t, "<nav><a href=\"index.html\">&#8592; All scenarios</a>");
    if (i > 0)
        text_printf(t, "<a href=\"%s.html\">previous</a>", bases[i - 1]);
    if (i + 1 < n)
        text_printf(t, "<a href=\"%s.html\">next</a>", bases[i + 1]);
    text_printf(t, "<a href=\"%s.md\">Markdown</a></nav>\n", bases[i]);
}

/* The Recovery section: one row per step recovery told, in time order. */
static void html_recovery(text_t *t, const report_scenario_t *s)
{
    if (!s->durable && s->n_recoveries == 0)
        return;
    char summary[512];
    recovery_summary(s, summary, sizeof summary);
    text_puts(t, "<h2>Recovery</h2>\n<p class=\"recov-sum\">");
    put_esc(t, summary, ESC_HTML, 0);
    text_puts(t, "</p>\n");
    if (s->n_recoveries == 0)
        return;
    text_puts(t, "<table class=\"recovery\"><thead><tr><th>Time (ms)</th><th>Instance</th><th>Step</th><th>Call</th>"
                 "<th>What happened</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < s->n_recoveries; i++) {
        const report_recovery_t *r = &s->recoveries[i];
        bool bad = recovery_bad(r), ended = strcmp(r->event, "ended") == 0;
        text_printf(t, "<tr class=\"%s\"><td class=\"when mono\">%.1f</td><td>", bad ? "bad" : ended ? "ended" : "step",
                    (double)r->t_us / 1000.0);
        put_esc(t, r->instance, ESC_HTML, 0);
        text_puts(t, "</td><td>");
        put_esc(t, r->event, ESC_HTML, 0);
        text_puts(t, "</td><td class=\"mono\" title=\"tx ");
        put_esc(t, r->tx, ESC_HTML, 0);
        text_puts(t, "\">");
        put_esc(t, r->call_id, ESC_HTML, 0);
        text_puts(t, "</td><td>");
        put_esc(t, r->detail, ESC_HTML, 0);
        text_puts(t, "</td></tr>\n");
    }
    text_puts(t, "</tbody></table>\n");
}

static void html_scenario(text_t *t, const report_scenario_t *all, size_t n, size_t i, page_base_t *bases,
                          const story_t *st)
{
    const report_scenario_t *s = &all[i];
    size_t failed = checks_failed(s);
    char title[300];
    snprintf(title, sizeof title, "%s%s%s", group_of(s), group_of(s)[0] ? "/" : "", name_of(s));
    story_state_t state = state_of(s);
    html_head(t, failed ? "FAIL " : "", title);
    html_nav(t, bases, n, i);
    text_printf(t, "<h1><span class=\"badge%s\">%s</span><span>",
                state == STATE_FAIL ? " fail" : state == STATE_EXPECTED_VIOLATION ? " xv" : "",
                state == STATE_FAIL ? "FAIL" : state == STATE_EXPECTED_VIOLATION ? "EXPECTED VIOLATION" : "PASS");
    if (group_of(s)[0] != '\0') {
        text_puts(t, "<span class=\"grp\">");
        put_esc(t, group_of(s), ESC_HTML, 0);
        text_puts(t, " /</span> ");
    }
    put_esc(t, name_of(s), ESC_HTML, 0);
    text_puts(t, "</span></h1>\n");
    char lesson[800];
    violation_sentence(s, lesson, sizeof lesson);
    if (lesson[0] != '\0') {
        text_puts(t, "<p class=\"xv-sum\">");
        put_esc(t, lesson, ESC_HTML, 0);
        text_puts(t, "</p>\n");
    }
    if (s->about != NULL && s->about[0] != '\0') {
        text_puts(t, "<p class=\"about\">");
        put_esc(t, s->about, ESC_HTML, 0);
        text_puts(t, "</p>\n");
    }
    text_printf(t, "<dl class=\"meta\"><dt>Checks</dt><dd>%zu passed, %zu failed</dd>"
                   "<dt>Seed</dt><dd><code>%llu</code></dd><dt>Duration</dt><dd>%.2f s</dd><dt>Mode</dt><dd>%s</dd>",
                s->n_checks - failed, failed, s->seed, s->duration_s, mode_of(s));
    if (s->n_violations > 0) {
        char names[600];
        violations_text(s, names, sizeof names);
        text_puts(t, "<dt>Expected violation</dt><dd><code>");
        put_esc(t, names, ESC_HTML, 0);
        text_puts(t, "</code></dd>");
    }
    char after[128];
    recovery_after(s, after, sizeof after);
    if (after[0] != '\0') {
        text_puts(t, "<dt>Recovery</dt><dd>");
        put_esc(t, after, ESC_HTML, 0);
        text_puts(t, "</dd>");
    }
    if (s->path != NULL) {
        text_puts(t, "<dt>File</dt><dd><code>");
        put_esc(t, s->path, ESC_HTML, 0);
        text_puts(t, "</code></dd>");
    }
    text_puts(t, "<dt>Replay</dt><dd><pre class=\"cmd\"><code>");
    put_esc(t, s->replay, ESC_HTML, 0);
    text_puts(t, "</code></pre></dd></dl>\n");

    text_puts(t, "<h2>Checks</h2>\n");
    if (s->n_checks == 0) {
        text_puts(t, "<p class=\"note\">No checks.</p>\n");
    } else {
        text_puts(t, "<table class=\"checks\"><thead><tr><th>Result</th><th>Check</th><th>Detail</th></tr></thead>"
                     "<tbody>\n");
        for (size_t k = 0; k < s->n_checks; k++) {
            const report_check_t *c = &s->checks[k];
            text_printf(t, "<tr class=\"%s\"><td class=\"res\">%s</td><td>", c->ok ? "ok" : "fail",
                        c->ok ? "ok" : "FAIL");
            put_esc(t, c->name, ESC_HTML, 0);
            text_puts(t, "</td><td class=\"detail mono\">");
            put_esc(t, c->detail, ESC_HTML, 0);
            text_puts(t, "</td></tr>\n");
        }
        text_puts(t, "</tbody></table>\n");
    }
    html_recovery(t, s);
    text_puts(t, "<h2>Sequence</h2>\n");
    html_sequence(t, st);
    if (s->log_excerpt != NULL && s->log_excerpt[0] != '\0') {
        text_puts(t, "<h2>Service logs</h2>\n<pre class=\"log\">");
        put_esc(t, s->log_excerpt, ESC_HTML, 0);
        text_puts(t, "</pre>\n");
    }
    text_puts(t, "</body>\n</html>\n");
}

static void html_index(text_t *t, const report_scenario_t *s, size_t n, page_base_t *bases)
{
    run_counts_t c = count_run(s, n);
    char sentence[300];
    run_sentence(&c, n, sentence, sizeof sentence);
    html_head(t, c.failed ? "FAIL " : "", "natomic lab report");
    text_printf(t, "<h1><span class=\"badge%s\">%s</span>natomic lab report</h1>\n", c.failed ? " fail" : "",
                c.failed ? "FAIL" : "PASS");
    text_puts(t, "<p class=\"run-sum\">");
    put_esc(t, sentence, ESC_HTML, 0);
    text_puts(t, "</p>\n");
    text_printf(t, "<div class=\"totals\"><div class=\"tile\"><b>%zu</b>scenarios</div>"
                   "<div class=\"tile ok\"><b>%zu</b>passed</div>"
                   "<div class=\"tile xv\"><b>%zu</b>expected violation</div>"
                   "<div class=\"tile%s\"><b>%zu</b>failed</div>"
                   "<div class=\"tile\"><b>%zu / %zu</b>checks passed</div>"
                   "<div class=\"tile\"><b>%.1f s</b>total</div></div>\n",
                n, c.ok, c.expected_violation, c.failed ? " fail" : "", c.failed, c.checks - c.failed_checks, c.checks,
                c.total_s);
    text_puts(t, "<table class=\"index\"><thead><tr><th>Result</th><th>Group</th><th>Scenario</th>"
                 "<th>What it shows</th><th>Expected violation</th><th>Checks</th><th>Duration</th><th>Mode</th>"
                 "<th>Seed</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < n; i++) {
        size_t f = checks_failed(&s[i]);
        story_state_t st = state_of(&s[i]);
        char about[2048], names[600];
        first_sentence(s[i].about, about, sizeof about);
        violations_text(&s[i], names, sizeof names);
        text_printf(t, "<tr class=\"%s\"><td class=\"res\">%s</td><td>", state_class(st), state_word(st));
        put_esc(t, group_of(&s[i]), ESC_HTML, 0);
        text_printf(t, "</td><td><a href=\"%s.html\">", bases[i]);
        put_esc(t, name_of(&s[i]), ESC_HTML, 0);
        text_puts(t, "</a></td><td class=\"about\">");
        put_esc(t, about, ESC_HTML, 0);
        text_puts(t, "</td><td class=\"xv\">");
        put_esc(t, names, ESC_HTML, 0);
        text_printf(t, "</td><td>%zu passed", s[i].n_checks - f);
        if (f)
            text_printf(t, ", <b>%zu failed</b>", f);
        text_printf(t, "</td><td>%.2f s</td><td class=\"mode\">%s", s[i].duration_s, mode_of(&s[i]));
        char after[128];
        recovery_after(&s[i], after, sizeof after);
        if (after[0] != '\0') {
            text_puts(t, "<br><span class=\"note\">recovery ");
            put_esc(t, after, ESC_HTML, 0);
            text_puts(t, "</span>");
        }
        text_printf(t, "</td><td><code>%llu</code></td></tr>\n", s[i].seed);
    }
    if (n == 0)
        text_puts(t, "<tr><td colspan=\"9\">No scenario ran.</td></tr>\n");
    text_puts(t, "</tbody></table>\n</body>\n</html>\n");
}

/* ---- the whole report ---------------------------------------------------- */

static int write_text(const char *dir, const char *base, const char *ext, text_t *t, char *err, size_t errcap)
{
    char name[300];
    snprintf(name, sizeof name, "%s%s", base, ext);
    int rc = write_page(dir, name, t, err, errcap);
    text_free(t);
    return rc;
}

int report_write(const char *dir, const report_scenario_t *scenarios, size_t n, char *err, size_t errcap)
{
    if (dir == NULL || (n > 0 && scenarios == NULL)) {
        set_err(err, errcap, "report: no folder or no scenarios");
        return -1;
    }
    if (make_dirs(dir, err, errcap) != 0)
        return -1;
    page_base_t *bases = calloc(n > 0 ? n : 1, sizeof *bases);
    if (bases == NULL) {
        set_err(err, errcap, "report: out of memory");
        return -1;
    }
    page_bases(scenarios, n, bases);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        story_t st;
        if (story_build(&st, scenarios[i].timeline) != 0) {
            set_err(err, errcap, "report %s: out of memory", bases[i]);
            rc = -1;
            break;
        }
        text_t md = {0}, html = {0};
        md_scenario(&md, &scenarios[i], &st);
        html_scenario(&html, scenarios, n, i, bases, &st);
        story_free(&st);
        rc = write_text(dir, bases[i], ".md", &md, err, errcap);
        if (rc == 0)
            rc = write_text(dir, bases[i], ".html", &html, err, errcap);
        text_free(&html);
    }
    if (rc == 0) {
        text_t md = {0}, html = {0};
        md_index(&md, scenarios, n, bases);
        html_index(&html, scenarios, n, bases);
        rc = write_text(dir, "index", ".md", &md, err, errcap);
        if (rc == 0)
            rc = write_text(dir, "index", ".html", &html, err, errcap);
        text_free(&html);
    }
    free(bases);
    return rc;
}
