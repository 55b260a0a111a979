-- IoT threshold alerts as delivered, staged: each event kept once
select * replace (cast(event_time as timestamptz) as event_time)
from read_json('{{ var("events") }}/iot/alert/*.jsonl', format = 'newline_delimited')
{% if var('dedupe') %}
qualify row_number() over (partition by event_id order by event_time) = 1
{% endif %}
