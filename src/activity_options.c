/*-------------------------------------------------------------------------
 *
 * activity_options.c
 *	  The options of an activity: its retry policy, its four timeouts and its
 *	  priority, validated when workflow code schedules it and normalized
 *	  (intervals in seconds) for the task row and the history.
 *
 *	  {"retry": {"maximum_attempts": 3, "initial_interval": "1 s",
 *	             "backoff_coefficient": 2, "maximum_interval": "1 min",
 *	             "non_retryable_errors": ["CardDeclined"]},
 *	   "schedule_to_start": "1 min", "start_to_close": "30 s",
 *	   "schedule_to_close": "1 h", "heartbeat": "5 s", "priority": 10}
 *
 *-------------------------------------------------------------------------
 */
#include "activity.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

/* durable.history shows these with every ActivityTaskScheduled (durable--*.sql) */
#define DEFAULT_INITIAL_INTERVAL_S	1.0
#define DEFAULT_BACKOFF_COEFFICIENT	2.0
#define DEFAULT_MAXIMUM_INTERVAL_S	100.0

static const char *const timeout_names[] = {
	"schedule_to_start", "start_to_close", "schedule_to_close", "heartbeat"
};


static void
bad_option(const char *fmt, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg(fmt, what),
			 errhint("Activity options look like {\"retry\": {\"maximum_attempts\": 3, "
					 "\"initial_interval\": \"1 s\", \"backoff_coefficient\": 2, "
					 "\"maximum_interval\": \"1 min\"}}.")));
}

/* Seconds of an interval given as a string ("1 min") or a number of seconds. */
static double
option_seconds(JsonbValue *v, const char *name)
{
	double		seconds;

	if (v->type == jbvNumeric)
		seconds = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													 NumericGetDatum(v->val.numeric)));
	else if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
															   CStringGetDatum(s),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));

		seconds = iv->time / (double) USECS_PER_SEC +
			iv->day * (double) SECS_PER_DAY +
			iv->month * (double) DAYS_PER_MONTH * SECS_PER_DAY;
	}
	else
	{
		bad_option("option \"%s\" must be an interval string or a number of seconds", name);
		return 0;				/* keep compiler quiet */
	}
	if (!(seconds > 0) || seconds > 10 * 365 * (double) SECS_PER_DAY)
		bad_option("option \"%s\" must be a positive interval of at most 10 years", name);
	return seconds;
}

static double
option_number(JsonbValue *v, const char *name)
{
	if (v->type != jbvNumeric)
		bad_option("retry option \"%s\" must be a number", name);
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											  NumericGetDatum(v->val.numeric)));
}

static void
parse_retry(Jsonb *retry, RetryPolicy *policy)
{
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(retry) || JB_ROOT_IS_SCALAR(retry))
		bad_option("activity option \"%s\" must be a JSON object", "retry");

	it = JsonbIteratorInit(&retry->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(k.val.string.val, k.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		if (strcmp(key, "initial_interval") == 0)
			policy->initial_interval_s = option_seconds(&v, key);
		else if (strcmp(key, "maximum_interval") == 0)
			policy->maximum_interval_s = option_seconds(&v, key);
		else if (strcmp(key, "backoff_coefficient") == 0)
		{
			policy->backoff_coefficient = option_number(&v, key);
			if (!(policy->backoff_coefficient >= 1.0 && policy->backoff_coefficient <= 100.0))
				bad_option("retry option \"%s\" must be between 1 and 100", key);
		}
		else if (strcmp(key, "non_retryable_errors") == 0)
		{
			JsonbIterator *eit;
			JsonbValue	e;
			JsonbIteratorToken etok;

			if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
				bad_option("retry option \"%s\" must be an array of error types", key);
			eit = JsonbIteratorInit(v.val.binary.data);
			while ((etok = JsonbIteratorNext(&eit, &e, true)) != WJB_DONE)
				if (etok == WJB_ELEM && e.type != jbvString)
					bad_option("retry option \"%s\" must be an array of error types", key);
			policy->non_retryable_errors = JsonbValueToJsonb(&v);
		}
		else if (strcmp(key, "maximum_attempts") == 0)
		{
			double		n = option_number(&v, key);

			if (n < 0 || n > INT_MAX || n != (int32) n)
				bad_option("retry option \"%s\" must be a whole number >= 0 (0 means unlimited)", key);
			policy->maximum_attempts = (int32) n;
		}
		else
			bad_option("unrecognized retry option \"%s\"", key);
	}
	if (policy->maximum_interval_s < policy->initial_interval_s)
		bad_option("retry option \"%s\" must not be less than initial_interval", "maximum_interval");
}

/*
 * What of the policy differs from the defaults, as JSON: what a task row
 * keeps (every claim writes the row again, so each byte there is two in the
 * WAL) and what ActivityTaskScheduled records (durable.history shows the
 * defaults with it); retry_policy_from_jsonb() reads it back.
 */
static Jsonb *
retry_policy_to_jsonb(RetryPolicy *p)
{
	JsonBuf		jb;

	json_begin(&jb);
	if (p->initial_interval_s != DEFAULT_INITIAL_INTERVAL_S)
		json_add_float(&jb, "initial_interval", p->initial_interval_s);
	if (p->backoff_coefficient != DEFAULT_BACKOFF_COEFFICIENT)
		json_add_float(&jb, "backoff_coefficient", p->backoff_coefficient);
	if (p->maximum_interval_s != DEFAULT_MAXIMUM_INTERVAL_S)
		json_add_float(&jb, "maximum_interval", p->maximum_interval_s);
	if (p->maximum_attempts != 0)
		json_add_int(&jb, "maximum_attempts", p->maximum_attempts);
	if (p->non_retryable_errors)
		json_add_jsonb(&jb, "non_retryable_errors", p->non_retryable_errors);
	return json_end(&jb);
}

void
retry_policy_from_jsonb(Jsonb *j, RetryPolicy *p)
{
	JsonbValue	v;

	p->initial_interval_s = DEFAULT_INITIAL_INTERVAL_S;
	p->backoff_coefficient = DEFAULT_BACKOFF_COEFFICIENT;
	p->maximum_interval_s = DEFAULT_MAXIMUM_INTERVAL_S;
	p->maximum_attempts = 0;
	p->non_retryable_errors = jsonb_field(j, "non_retryable_errors");
#define GETNUM(key, field, conv) \
	if (getKeyJsonValueFromContainer(&j->root, key, strlen(key), &v) && v.type == jbvNumeric) \
		p->field = conv(DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric))))
	GETNUM("initial_interval", initial_interval_s, (double));
	GETNUM("backoff_coefficient", backoff_coefficient, (double));
	GETNUM("maximum_interval", maximum_interval_s, (double));
	GETNUM("maximum_attempts", maximum_attempts, (int32));
#undef GETNUM
}

static int
timeout_index(const char *key)
{
	for (int i = 0; i < (int) lengthof(timeout_names); i++)
		if (strcmp(key, timeout_names[i]) == 0)
			return i;
	return -1;
}

/*
 * Validates activity options and normalizes them into *out.  Called from
 * workflow code, so errors are the code's to catch.
 */
void
activity_parse_options(Jsonb *options, ActivityOptions *out)
{
	RetryPolicy policy = {DEFAULT_INITIAL_INTERVAL_S, DEFAULT_BACKOFF_COEFFICIENT,
	DEFAULT_MAXIMUM_INTERVAL_S, 0, NULL};
	double		timeouts[lengthof(timeout_names)] = {0};
	JsonBuf		jb;
	static Jsonb *empty_object = NULL;	/* no timeouts, and the default policy */

	out->priority = 0;
	/* no options, the usual case: the defaults, built once */
	if (options == NULL)
	{
		if (empty_object == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			json_begin(&jb);
			empty_object = json_end(&jb);
			MemoryContextSwitchTo(old);
		}
		out->retry_policy = empty_object;
		out->timeouts = empty_object;
		return;
	}
	if (options != NULL)
	{
		JsonbIterator *it;
		JsonbValue	k,
					v;
		JsonbIteratorToken tok;

		if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
			bad_option("activity options must be a JSON object, not %s",
					   JB_ROOT_IS_ARRAY(options) && !JB_ROOT_IS_SCALAR(options) ?
					   "an array" : "a scalar");
		it = JsonbIteratorInit(&options->root);
		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			char	   *key;
			int			t;

			if (tok != WJB_KEY)
				continue;
			key = pnstrdup(k.val.string.val, k.val.string.len);
			(void) JsonbIteratorNext(&it, &v, true);
			if (strcmp(key, "retry") == 0)
				continue;		/* parsed below, as a whole */
			else if ((t = timeout_index(key)) >= 0)
				timeouts[t] = option_seconds(&v, key);
			else if (strcmp(key, "priority") == 0)
			{
				double		p = option_number(&v, key);

				if (p != (int32) p || p < -1000000 || p > 1000000)
					bad_option("activity option \"%s\" must be a whole number", key);
				out->priority = (int32) p;
			}
			else
				bad_option("unrecognized activity option \"%s\"", key);
		}
		{
			Jsonb	   *retry = jsonb_field(options, "retry");

			if (retry != NULL)
				parse_retry(retry, &policy);
		}
	}
	out->retry_policy = retry_policy_to_jsonb(&policy);

	json_begin(&jb);
	for (int i = 0; i < (int) lengthof(timeout_names); i++)
		if (timeouts[i] > 0)
			json_add_float(&jb, timeout_names[i], timeouts[i]);
	out->timeouts = json_end(&jb);
}

/* A timeout in seconds from normalized timeouts; 0 when not set. */
double
activity_timeout_seconds(Jsonb *timeouts, const char *name)
{
	JsonbValue	v;

	if (timeouts == NULL ||
		getKeyJsonValueFromContainer(&timeouts->root, name, strlen(name), &v) == NULL ||
		v.type != jbvNumeric)
		return 0;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
}

/*
 * When an attempt started at started_at runs out of its start_to_close; 0
 * when it has none.  The task row keeps it (start_to_close_at).
 */
TimestampTz
activity_start_to_close_at(Jsonb *timeouts, TimestampTz started_at)
{
	double		seconds;

	if (timeouts == NULL || JB_ROOT_COUNT(timeouts) == 0)
		return 0;
	seconds = activity_timeout_seconds(timeouts, "start_to_close");
	return seconds > 0 ? plus_seconds(started_at, seconds) : 0;
}

/*
 * Does an activity with these timeouts have timer rows (durable.timers)?
 * All its timeouts are timers but start_to_close, which its task row keeps.
 */
bool
activity_has_timeout_timers(Jsonb *timeouts)
{
	if (timeouts == NULL || JB_ROOT_COUNT(timeouts) == 0)
		return false;
	return activity_timeout_seconds(timeouts, "schedule_to_start") > 0 ||
		activity_timeout_seconds(timeouts, "schedule_to_close") > 0 ||
		activity_timeout_seconds(timeouts, "heartbeat") > 0;
}

/* Does the policy stop retrying errors of this type? */
bool
retry_policy_stops(RetryPolicy *p, const char *error_type)
{
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;

	if (error_type == NULL || p->non_retryable_errors == NULL)
		return false;
	it = JsonbIteratorInit(&p->non_retryable_errors->root);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		if (tok == WJB_ELEM && e.type == jbvString &&
			e.val.string.len == (int) strlen(error_type) &&
			strncmp(e.val.string.val, error_type, e.val.string.len) == 0)
			return true;
	return false;
}

/* The delay before attempt (failed_attempt + 1). */
double
backoff_seconds(RetryPolicy *p, int32 failed_attempt)
{
	double		delay = p->initial_interval_s;

	for (int i = 1; i < failed_attempt && delay < p->maximum_interval_s; i++)
		delay *= p->backoff_coefficient;
	return Min(delay, p->maximum_interval_s);
}

