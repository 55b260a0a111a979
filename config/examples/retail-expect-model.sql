-- A platform's model of revenue per store per hour, over retail-expect.yaml's JSON lines
-- (DuckDB). Check it: datafactory verify ... --expected ./data/expected
--                                         --actual duckdb://data/platform.duckdb --question sales_by_store_hour
SET TimeZone = 'UTC';
CREATE OR REPLACE TABLE sales_by_store_hour AS
WITH raw AS (
  SELECT * FROM read_json('data/expect-demo/events/retail/pos_transaction/*.jsonl')
),
valid AS (  -- reject what the schema does not allow (amounts are decimals, never negative)
  SELECT * FROM raw
  WHERE TRY_CAST(subtotal AS DECIMAL(18, 2)) >= 0
    AND TRY_CAST(tax AS DECIMAL(18, 2)) >= 0
    AND TRY_CAST(total AS DECIMAL(18, 2)) >= 0
),
once AS (  -- at-least-once delivery: count each event once
  SELECT * FROM valid QUALIFY row_number() OVER (PARTITION BY event_id) = 1
)
SELECT time_bucket(INTERVAL 1 HOUR, CAST(event_time AS TIMESTAMPTZ)) AS window_start,
       time_bucket(INTERVAL 1 HOUR, CAST(event_time AS TIMESTAMPTZ)) + INTERVAL 1 HOUR
         AS window_end,
       store_id,
       count(*) AS transactions,
       sum(list_sum(list_transform(items, lambda x: x.quantity))) AS units,
       sum(CAST(subtotal AS DECIMAL(18, 2))) AS subtotal,
       sum(CAST(tax AS DECIMAL(18, 2))) AS tax,
       sum(CAST(total AS DECIMAL(18, 2))) AS revenue
FROM once
GROUP BY ALL;
