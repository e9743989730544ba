-- The greet workflow: look a user up, render two greetings in parallel,
-- return both.  Plain PL/pgSQL; every durable.* call is recorded in the
-- run's history and replayed.
CREATE FUNCTION greet(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    usr jsonb;
    handles bigint[];
    greetings jsonb;
BEGIN
    usr := durable.activity('lookup_user', input);                -- blocks, durably
    handles := ARRAY[
        durable.activity_async('render', usr || '{"lang": "en"}'),  -- fan out
        durable.activity_async('render', usr || '{"lang": "fr"}')];
    greetings := durable.await_all(handles);                      -- fan in, in order
    RETURN jsonb_build_object('user', usr, 'greetings', greetings);
END
$$;
