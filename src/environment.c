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
#include "utils/guc.h"

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

/*
 * Sets, for the current GUC nest level (the caller's subtransaction undoes
 * it), each setting whose value here differs from the worker's.  The worker
 * itself has nothing to do.
 */
void
environment_adopt(void)
{
	if (IsBackgroundWorker || !refresh_adopted_values())
		return;
	for (int i = 0; i < DURABLE_ENV_SETTINGS; i++)
	{
		const char *value = GetConfigOption(environment_settings[i], true, false);

		/* "": the worker had no such setting; nothing to adopt */
		if (value == NULL || adopted_values[i][0] == '\0' ||
			strcmp(value, adopted_values[i]) == 0)
			continue;
		(void) set_config_option(environment_settings[i], adopted_values[i],
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
}
