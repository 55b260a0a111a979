-- POS transactions as delivered (JSON lines), staged: records the schema does not allow are
-- rejected (amounts are decimals, never negative), each event kept once (at-least-once
-- delivery brings copies), event times as timestamps
with raw as (
    select * from read_json('{{ var("events") }}/retail/pos_transaction/*.jsonl',
                            format = 'newline_delimited')
),
valid as (
    select * from raw
    {% if var('reject') %}
    where try_cast(subtotal as decimal(18, 2)) >= 0
      and try_cast(tax as decimal(18, 2)) >= 0
      and try_cast(total as decimal(18, 2)) >= 0
    {% endif %}
)
select * replace (cast(event_time as timestamptz) as event_time)
from valid
{% if var('dedupe') %}
qualify row_number() over (partition by event_id order by event_time) = 1
{% endif %}
