-- alerts raised per site per day (UTC)
select time_bucket(interval 1 day, event_time) as window_start,
       time_bucket(interval 1 day, event_time) + interval 1 day as window_end,
       site_id,
       count(*) as alerts
from {{ ref('alert') }}
where alert_type = 'alert_raised'
group by all
