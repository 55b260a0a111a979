-- transactions, units and revenue per store per hour (UTC); try_cast: with reject: false,
-- what the staging let through is counted (a garbled amount as null)
select time_bucket(interval 1 hour, event_time) as window_start,
       time_bucket(interval 1 hour, event_time) + interval 1 hour as window_end,
       store_id,
       count(*) as transactions,
       sum(list_sum(list_transform(items, lambda x: x.quantity))) as units,
       sum(try_cast(subtotal as decimal(18, 2))) as subtotal,
       sum(try_cast(tax as decimal(18, 2))) as tax,
       sum(try_cast(total as decimal(18, 2))) as revenue
from {{ ref('pos_transaction') }}
group by all
