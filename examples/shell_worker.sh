#!/bin/bash
# An activity worker in 20 lines of shell: long-polls the "default" task
# queue with psql, does the work, completes the task.  Connection settings
# come from the usual PG* environment variables.
#   examples/shell_worker.sh [max_tasks_to_do]
set -euo pipefail
todo=${1:-0}   # 0: run forever
done_count=0
while [ "$todo" -eq 0 ] || [ "$done_count" -lt "$todo" ]; do
    row=$(psql -XAtq -F $'\x1f' -c "SELECT task_token, activity, input->>'id', input->>'name', input->>'lang'
                                   FROM durable.poll_activity('default', worker => 'shell-$$', wait => '30 s')")
    [ -z "$row" ] && continue
    IFS=$'\x1f' read -r token activity id name lang <<< "$row"
    case "$activity" in
        lookup_user) result="{\"name\": \"Ada $id\"}" ;;
        render)      [ "$lang" = fr ] && result="\"Bonjour, $name\"" || result="\"Hello, $name\"" ;;
        *)           echo "SELECT durable.fail_activity(:'token', 'unknown activity', retryable => false)" |
                         psql -XAtq -v token="$token" >/dev/null; continue ;;
    esac
    echo "SELECT durable.complete_activity(:'token', :'result')" | psql -XAtq -v token="$token" -v result="$result" >/dev/null
    echo "worker: $activity -> $result"
    done_count=$((done_count + 1))
done
