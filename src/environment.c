/*-------------------------------------------------------------------------
 *
 * environment.c
 *	  The settings workflow code runs under, wherever it runs.
 *
 * Replay requires that every execution of a workflow's code sees the same
 * world.  Most workflow tasks run in the database's worker, but a backend
 * that completes an activity may run the task it causes itself (see
 * replay_task_inline()), and a query replays the code in the caller's
 * backend.  Settings that change what the same code computes (time zone,
 * date and number formats, locales of formatting functions, ...) would then
 * differ between executions with the sessions' own SET commands, connection
 * options and role defaults.  So the worker, which is the reference,
 * publishes its values in its shared-memory slot at start and at every
 * configuration reload, and a client backend about to run workflow code
 * adopts them for that span (only those that differ: usually none).
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "miscadmin.h"
#include "parser/parse_expr.h"
#include "parser/parser.h"
#include "pgtime.h"
#include "tsearch/ts_cache.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/bytea.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/pg_locale.h"
#include "utils/rls.h"
#include "utils/xml.h"

/* Settings that change the results of the same SQL on the same data. */
static const char *const environment_settings[DURABLE_ENV_SETTINGS] = {
	"TimeZone",
	"DateStyle",
	"IntervalStyle",
	"extra_float_digits",
	"bytea_output",
	"lc_monetary",
	"lc_numeric",
	"lc_time",
	"xmlbinary",
	"xmloption",
	"default_text_search_config",
	"array_nulls",
	"transform_null_equals",
	"standard_conforming_strings",
	"backslash_quote",
	"quote_all_identifiers",
	"timezone_abbreviations",
	"row_security",
};

/* This backend's copy of its database worker's values. */
static char adopted_values[DURABLE_ENV_SETTINGS][DURABLE_ENV_VALUE_LEN];
static int	adopted_slot = -1;
static uint32 adopted_version = 0;

/*
 * The variables behind those settings, as PostgreSQL's own code reads them,
 * when this session's values were last found to be the worker's, every one
 * (the usual case: nothing to adopt).  While they stay as they were, and
 * the worker's values too, the comparison is not made again: it looks each
 * setting up by name (GetConfigOption) among hundreds, 13,000 instructions
 * for the eighteen, at every workflow task a client backend runs.
 * timezone_abbreviations has no exported variable: its value is kept.
 */
typedef struct SessionSettings
{
	pg_tz	   *timezone;
	int			date_style;
	int			date_order;
	int			interval_style;
	int			extra_float_digits;
	int			bytea_output;
	int			xmlbinary;
	int			xmloption;
	int			backslash_quote;
	bool		array_nulls;
	bool		transform_null_equals;
	bool		standard_conforming_strings;
	bool		quote_all_identifiers;
	bool		row_security;
	char		lc_monetary[DURABLE_ENV_VALUE_LEN];
	char		lc_numeric[DURABLE_ENV_VALUE_LEN];
	char		lc_time[DURABLE_ENV_VALUE_LEN];
	char		text_search_config[DURABLE_ENV_VALUE_LEN];
	char		timezone_abbreviations[DURABLE_ENV_VALUE_LEN];
} SessionSettings;

static SessionSettings matching_settings;
static bool matching_settings_valid = false;
static int	matching_slot = -1;
static uint32 matching_version = 0;

/* The worker: publishes its own values (at start, after a reload). */
void
environment_publish(WorkerSlot *slot)
{
	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot->env_valid = true;
	for (int i = 0; i < DURABLE_ENV_SETTINGS; i++)
	{
		const char *value = GetConfigOption(environment_settings[i], true, false);

		strlcpy(slot->env[i], value ? value : "", DURABLE_ENV_VALUE_LEN);
		/* a value we cannot hold whole cannot be adopted safely */
		if (value && strlen(value) >= DURABLE_ENV_VALUE_LEN)
			slot->env_valid = false;
	}
	slot->env_version++;
	LWLockRelease(durable_shared->lock);
}

/*
 * Copies this database's worker's values, if they changed since the last
 * copy.  False when there is no running worker that published them.
 */
static bool
refresh_adopted_values(void)
{
	bool		found = false;

	if (durable_shared == NULL)
		return false;
	LWLockAcquire(durable_shared->lock, LW_SHARED);
	for (int i = 0; i < durable_max_databases; i++)
	{
		WorkerSlot *slot = &durable_shared->slots[i];

		if (slot->state != SLOT_RUNNING || slot->dboid != MyDatabaseId)
			continue;
		found = slot->env_valid && slot->env_version != 0;
		if (found && (i != adopted_slot || slot->env_version != adopted_version))
		{
			memcpy(adopted_values, slot->env, sizeof(adopted_values));
			adopted_slot = i;
			adopted_version = slot->env_version;
		}
		break;
	}
	LWLockRelease(durable_shared->lock);
	return found;
}

/* Can this backend run workflow code as the worker would? */
bool
environment_available(void)
{
	return IsBackgroundWorker || refresh_adopted_values();
}

/* A string setting into a SessionSettings field; false if too long to keep. */
static bool
keep_string(char *field, const char *value)
{
	return strlcpy(field, value ? value : "", DURABLE_ENV_VALUE_LEN) < DURABLE_ENV_VALUE_LEN;
}

/* This session's settings now; false when one is too long to keep. */
static bool
session_settings(SessionSettings *s)
{
	memset(s, 0, sizeof(SessionSettings));
	s->timezone = session_timezone;
	s->date_style = DateStyle;
	s->date_order = DateOrder;
	s->interval_style = IntervalStyle;
	s->extra_float_digits = extra_float_digits;
	s->bytea_output = bytea_output;
	s->xmlbinary = xmlbinary;
	s->xmloption = xmloption;
	s->backslash_quote = backslash_quote;
	s->array_nulls = Array_nulls;
	s->transform_null_equals = Transform_null_equals;
	s->standard_conforming_strings = standard_conforming_strings;
	s->quote_all_identifiers = quote_all_identifiers;
	s->row_security = row_security;
	return keep_string(s->lc_monetary, locale_monetary) &&
		keep_string(s->lc_numeric, locale_numeric) &&
		keep_string(s->lc_time, locale_time) &&
		keep_string(s->text_search_config, TSCurrentConfig) &&
		keep_string(s->timezone_abbreviations,
					GetConfigOption("timezone_abbreviations", true, false));
}

/*
 * Sets, for the current GUC nest level (the caller's subtransaction undoes
 * it), each setting whose value here differs from the worker's.  The worker
 * itself has nothing to do.
 */
void
environment_adopt(void)
{
	SessionSettings now;
	bool		all_match = true;

	if (IsBackgroundWorker || !refresh_adopted_values())
		return;
	/* as they were when all matched: they still do */
	if (session_settings(&now) && matching_settings_valid &&
		matching_slot == adopted_slot && matching_version == adopted_version &&
		memcmp(&now, &matching_settings, sizeof(SessionSettings)) == 0)
		return;
	matching_settings_valid = false;
	for (int i = 0; i < DURABLE_ENV_SETTINGS; i++)
	{
		const char *value = GetConfigOption(environment_settings[i], true, false);

		/* "": the worker had no such setting; nothing to adopt */
		if (value == NULL || adopted_values[i][0] == '\0' ||
			strcmp(value, adopted_values[i]) == 0)
			continue;
		all_match = false;
		(void) set_config_option(environment_settings[i], adopted_values[i],
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	if (all_match && session_settings(&matching_settings))
	{
		matching_settings_valid = true;
		matching_slot = adopted_slot;
		matching_version = adopted_version;
	}
}
