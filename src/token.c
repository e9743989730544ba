/*-------------------------------------------------------------------------
 *
 * token.c
 *	  Task tokens: what poll_activity() hands to a worker and what it gives
 *	  back to complete, fail or heartbeat one attempt of an activity.
 *
 * A token is "<run>.<handle>.<attempt>.<mac>": the task's key (its run id in
 * hex, and the activity's handle), the attempt, and the mac, HMAC-SHA256 of
 * the rest under a random per-database key (durable.token_key,
 * readable only by the extension owner), truncated to 128 bits.  So tokens
 * cannot be guessed or forged, and nothing needs to be stored to check one:
 * a token whose mac is wrong is an error, a genuine token of an attempt that
 * is no longer current is merely stale.  Must be called inside engine_enter().
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "catalog/namespace.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include <openssl/evp.h>

#define TOKEN_MAC_BYTES	16
/* "<run>.<handle>.<attempt>" and its NUL */
#define TOKEN_TASK_CHARS	(UUID_LEN * 2 + 2 * 12 + 1)

PG_FUNCTION_INFO_V1(durable_random_key);

Datum
durable_random_key(PG_FUNCTION_ARGS)
{
	bytea	   *key = palloc(VARHDRSZ + 32);

	SET_VARSIZE(key, VARHDRSZ + 32);
	if (!pg_strong_random(VARDATA(key), 32))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key")));
	PG_RETURN_BYTEA_P(key);
}

/*
 * The key is read once per session: it never changes while the table
 * holding it exists (a new CREATE EXTENSION makes a new table, with a new
 * key).  HMAC-SHA256 with the key's two padded blocks hashed once per session:
 * signing a token then costs two SHA-256 finishes, where computing the HMAC
 * afresh (key set-up, OpenSSL's context and digest look-ups) cost ten times
 * as much, once per activity.  The result is HMAC-SHA256 as RFC 2104 has
 * it (the regression tests check tokens against pgcrypto's hmac()).
 */
#define HMAC_BLOCK	64

static EVP_MD_CTX *keyed_inner = NULL;	/* SHA-256 state after key ^ ipad */
static EVP_MD_CTX *keyed_outer = NULL;	/* SHA-256 state after key ^ opad */
static EVP_MD_CTX *scratch = NULL;
static Oid	cached_table = InvalidOid;

/* The table that holds the key (a new one with each CREATE EXTENSION). */
static Oid
key_table(void)
{
	return get_relname_relid("token_key", get_namespace_oid("durable", false));
}

static void
digest_failed(void)
{
	elog(ERROR, "could not compute task token");
}

static EVP_MD_CTX *
keyed_state(const uint8 *key_block, uint8 pad)
{
	uint8		block[HMAC_BLOCK];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	for (int i = 0; i < HMAC_BLOCK; i++)
		block[i] = key_block[i] ^ pad;
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
		EVP_DigestUpdate(ctx, block, HMAC_BLOCK) != 1)
		digest_failed();
	return ctx;
}

/* Reads the key (once per session, or when the extension was recreated). */
static void
prepare_key(void)
{
	static EnginePlan plan = {NULL, "SELECT key FROM durable.token_key", 0, {0}};
	Oid			table = key_table();
	uint8		key_block[HMAC_BLOCK] = {0};
	bool		isnull;
	bytea	   *key;
	size_t		len;

	if (keyed_inner != NULL && cached_table == table)
		return;
	if (engine_exec(&plan, NULL, NULL, 1) != 1)
		elog(ERROR, "durable.token_key is empty");
	key = DatumGetByteaPP(engine_get(0, 1, &isnull));
	len = VARSIZE_ANY_EXHDR(key);
	if (len > HMAC_BLOCK)
	{
		/* a longer key is hashed first */
		unsigned int digest_len;

		if (EVP_Digest(VARDATA_ANY(key), len, key_block, &digest_len, EVP_sha256(), NULL) != 1)
			digest_failed();
	}
	else
		memcpy(key_block, VARDATA_ANY(key), len);
	EVP_MD_CTX_free(keyed_inner);
	EVP_MD_CTX_free(keyed_outer);
	keyed_inner = NULL;
	keyed_outer = NULL;
	if (scratch == NULL && (scratch = EVP_MD_CTX_new()) == NULL)
		digest_failed();
	keyed_outer = keyed_state(key_block, 0x5c);
	keyed_inner = keyed_state(key_block, 0x36);
	cached_table = table;
}

/* "<run>.<handle>.<attempt>", the run id as 32 hex digits */
static void
task_text(Datum run_id, int32 handle, int32 attempt, char *text, size_t size)
{
	char		hex[UUID_LEN * 2 + 1];

	hex[hex_encode((char *) DatumGetUUIDP(run_id)->data, UUID_LEN, hex)] = '\0';
	snprintf(text, size, "%s.%d.%d", hex, handle, attempt);
}

static void
token_mac(const char *message, uint8 *mac)
{
	uint8		inner[PG_SHA256_DIGEST_LENGTH];
	uint8		full[PG_SHA256_DIGEST_LENGTH];
	unsigned int len;

	prepare_key();
	if (EVP_MD_CTX_copy_ex(scratch, keyed_inner) != 1 ||
		EVP_DigestUpdate(scratch, message, strlen(message)) != 1 ||
		EVP_DigestFinal_ex(scratch, inner, &len) != 1 ||
		EVP_MD_CTX_copy_ex(scratch, keyed_outer) != 1 ||
		EVP_DigestUpdate(scratch, inner, sizeof(inner)) != 1 ||
		EVP_DigestFinal_ex(scratch, full, &len) != 1)
		digest_failed();
	memcpy(mac, full, TOKEN_MAC_BYTES);
}

char *
token_make(Datum run_id, int32 handle, int32 attempt)
{
	char		task[TOKEN_TASK_CHARS];
	uint8		mac[TOKEN_MAC_BYTES];
	char		hex[TOKEN_MAC_BYTES * 2 + 1];

	task_text(run_id, handle, attempt, task, sizeof(task));
	token_mac(task, mac);
	hex[hex_encode((char *) mac, TOKEN_MAC_BYTES, hex)] = '\0';
	return psprintf("%s.%s", task, hex);
}

/* Compares in constant time, so timing tells nothing about the mac. */
static bool
macs_equal(const uint8 *a, const uint8 *b)
{
	uint8		diff = 0;

	for (int i = 0; i < TOKEN_MAC_BYTES; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static void
invalid_token(const char *token, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid task token \"%s\"", token),
			 errdetail("%s", why),
			 errhint("Pass the task_token column returned by durable.poll_activity() unchanged.")));
}

/* The task (*run_id palloc'd) and attempt a genuine token names. */
void
token_parse(const char *token, Datum *run_id, int32 *handle, int32 *attempt)
{
	char		run_hex[UUID_LEN * 2 + 1];
	int			h;
	int			att;
	int			consumed = 0;
	char		hex[TOKEN_MAC_BYTES * 2 + 1];
	uint8		given[TOKEN_MAC_BYTES];
	uint8		expected[TOKEN_MAC_BYTES];
	char		task[TOKEN_TASK_CHARS];
	pg_uuid_t  *uuid;

	if (sscanf(token, "%32[0-9a-f].%d.%d.%32[0-9a-f]%n", run_hex, &h, &att, hex,
			   &consumed) != 4 ||
		consumed != (int) strlen(token) || strlen(run_hex) != UUID_LEN * 2 ||
		strlen(hex) != TOKEN_MAC_BYTES * 2 || h <= 0 || att <= 0)
		invalid_token(token, "A task token has the form <run>.<handle>.<attempt>.<signature>.");

	uuid = palloc(sizeof(pg_uuid_t));
	hex_decode(run_hex, UUID_LEN * 2, (char *) uuid->data);
	task_text(UUIDPGetDatum(uuid), h, att, task, sizeof(task));
	/* only the form token_make() writes: no sign, no leading zero, no overflow */
	if (strncmp(token, task, strlen(task)) != 0 || token[strlen(task)] != '.')
		invalid_token(token, "A task token has the form <run>.<handle>.<attempt>.<signature>.");
	hex_decode(hex, TOKEN_MAC_BYTES * 2, (char *) given);
	token_mac(task, expected);
	if (!macs_equal(given, expected))
		invalid_token(token, "The token's signature does not match: it was not issued by this database.");

	*run_id = UUIDPGetDatum(uuid);
	*handle = h;
	*attempt = att;
}
