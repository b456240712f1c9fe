/*
 * nkey.c -- a user's nkey seed file, turned into what nats.c needs to sign in with it.
 *
 * NATS can authenticate a user by an nkey: an Ed25519 key pair whose public half the server
 * lists (`users = [{nkey: UA...}]`) and whose private half, the seed, the client keeps in a
 * file. At connect time the server sends a nonce; the client signs it with the seed and sends
 * the public key with the signature. nats.c 3.4.1 does the signing
 * (natsOptions_SetNKeyFromSeed), but wants the public key given alongside the seed file, and
 * has no public way to derive it. The `nats` CLI asks for the seed file alone (`--nkey`), so
 * this file derives the public key, as the nkeys library does:
 *
 *   seed string  "SU" + base32( [prefix bytes (2)] [Ed25519 seed (32)] [CRC16 (2, LE)] )
 *                the first byte carries the seed marker (18 << 3) and the top 3 bits of the
 *                key type, the second the type's low 5 bits; a user's type is 20 << 3 ('U')
 *   public key   "U"  + base32( [type (1)] [Ed25519 public key (32)] [CRC16 (2, LE)] )
 *
 * base32 is RFC 4648's alphabet without padding; the CRC is CRC-16/XMODEM over everything
 * before it. The Ed25519 public key is computed from the seed by libcrypto (OpenSSL), which
 * nats.c links already. The seed is wiped from memory after use. A file that holds no user
 * seed, or one whose checksum is wrong, is refused with a message that never quotes it.
 */
#include "natomic_internal.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NKEY_PREFIX_SEED (18 << 3)
#define NKEY_PREFIX_USER (20 << 3)
#define NKEY_SEED_CHARS 58 /* base32 of 2 + 32 + 2 bytes */
#define NKEY_RAW 36

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static uint16_t crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

/* base32 text (no padding) into out; the number of bytes, or -1 on a character outside the alphabet. */
static int b32_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        const char *at = strchr(b32, in[i]);
        if (in[i] == '\0' || at == NULL)
            return -1;
        acc = (acc << 5) | (uint32_t)(at - b32);
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (int)n;
}

static void b32_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5 && n + 1 < cap) {
            bits -= 5;
            out[n++] = b32[(acc >> bits) & 31];
        }
    }
    if (bits > 0 && n + 1 < cap)
        out[n++] = b32[(acc << (5 - bits)) & 31];
    out[n] = '\0';
}

/* The first user seed ("SU" and 56 more base32 characters) in the file, into seed[]; false with a message. */
static bool read_seed(const char *path, char seed[NKEY_SEED_CHARS + 1], char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errcap, "--nkey %s: %s", path, strerror(errno));
        return false;
    }
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        char *s = strstr(line, "SU");
        if (s != NULL && strspn(s, b32) >= NKEY_SEED_CHARS) {
            memcpy(seed, s, NKEY_SEED_CHARS);
            seed[NKEY_SEED_CHARS] = '\0';
            found = true;
        }
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    if (!found)
        snprintf(err, errcap, "--nkey %s: no user nkey seed in it (a line with SU... as `nk -gen user` writes)",
                 path);
    return found;
}

natomic_status_t natomic__nkey_public(const char *seed_file, char *pub, size_t cap, char *err, size_t errcap)
{
    char seed[NKEY_SEED_CHARS + 1];
    uint8_t raw[NKEY_RAW + 4];
    if (cap < 60) {
        snprintf(err, errcap, "--nkey: no room for the public key");
        return NATOMIC_EINVAL;
    }
    if (!read_seed(seed_file, seed, err, errcap))
        return NATOMIC_EINVAL;
    int n = b32_decode(seed, NKEY_SEED_CHARS, raw, sizeof raw);
    explicit_bzero(seed, sizeof seed);
    natomic_status_t st = NATOMIC_EINVAL;
    int type = n >= 2 ? ((raw[0] & 7) << 5) | ((raw[1] & 0xf8) >> 3) : -1;
    uint16_t want = n == NKEY_RAW ? (uint16_t)(raw[NKEY_RAW - 2] | (raw[NKEY_RAW - 1] << 8)) : 0;
    if (n != NKEY_RAW || (raw[0] & 0xf8) != NKEY_PREFIX_SEED || type != NKEY_PREFIX_USER) {
        snprintf(err, errcap, "--nkey %s: not a user nkey seed", seed_file);
    } else if (crc16(raw, NKEY_RAW - 2) != want) {
        snprintf(err, errcap, "--nkey %s: the seed's checksum is wrong (a typo or a cut line?)", seed_file);
    } else {
        EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 2, 32);
        uint8_t out[1 + 32 + 2];
        size_t len = 32;
        if (key != NULL && EVP_PKEY_get_raw_public_key(key, out + 1, &len) == 1 && len == 32) {
            out[0] = NKEY_PREFIX_USER;
            uint16_t crc = crc16(out, 33);
            out[33] = (uint8_t)(crc & 0xff);
            out[34] = (uint8_t)(crc >> 8);
            b32_encode(out, sizeof out, pub, cap);
            st = NATOMIC_OK;
        } else {
            snprintf(err, errcap, "--nkey %s: cannot derive the public key (libcrypto)", seed_file);
        }
        EVP_PKEY_free(key);
    }
    explicit_bzero(raw, sizeof raw);
    return st;
}
