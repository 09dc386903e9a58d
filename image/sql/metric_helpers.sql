-- The views and functions monitoring reads, with Spilo's names, arguments
-- and columns. The functions run as their owner, the superuser, so that
-- admin and robot_zmon see every table, index, sequence and statement.
-- psql variables: admin.

CREATE SCHEMA IF NOT EXISTS metric_helpers;
GRANT USAGE ON SCHEMA metric_helpers TO :"admin", robot_zmon;

-- Table bloat, estimated from the planner's statistics: a row takes its
-- header (23 bytes, a null bitmap when a column has nulls, aligned), its
-- average data width (aligned) and a 4-byte line pointer; a page holds
-- block_size less its 24-byte header, filled up to fillfactor; TOAST
-- stores 4 chunks a page. The difference between the pages a table has
-- (heap and TOAST) and the pages its rows need is "extra" without
-- fillfactor and "bloat" with it. t_is_na: the estimate lacks statistics
-- (a column never analyzed, or no row count yet).
CREATE OR REPLACE FUNCTION metric_helpers.get_table_bloat_approx(
    OUT t_database name,
    OUT t_schema_name name,
    OUT t_table_name name,
    OUT t_real_size numeric,
    OUT t_extra_size double precision,
    OUT t_extra_ratio double precision,
    OUT t_fill_factor integer,
    OUT t_bloat_size double precision,
    OUT t_bloat_ratio double precision,
    OUT t_is_na boolean)
RETURNS SETOF record
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
WITH layout AS (
    SELECT current_setting('block_size')::numeric AS block_size,
           (SELECT max_data_alignment FROM pg_control_init()) AS align
),
widths AS (
    SELECT t.oid,
           count(*) AS columns,
           sum((1 - coalesce(s.stanullfrac, 0)) * coalesce(s.stawidth, 0)) AS data,
           bool_or(coalesce(s.stanullfrac, 0) > 0) AS nullable,
           count(s.starelid) < count(*) AS unanalyzed
      FROM pg_class AS t
      JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_statistic AS s ON s.starelid = t.oid AND s.staattnum = a.attnum AND NOT s.stainherit
     WHERE t.relkind = 'r'
     GROUP BY t.oid
),
tables AS (
    SELECT n.nspname,
           t.relname,
           layout.block_size,
           coalesce((SELECT o.option_value::integer
                       FROM pg_options_to_table(t.reloptions) AS o
                      WHERE o.option_name = 'fillfactor'), 100) AS fillfactor,
           layout.block_size * (t.relpages + coalesce(toast.relpages, 0)) AS real_size,
           -- bytes per row: aligned header and data, plus the line pointer
           ceil((23 + CASE WHEN w.nullable THEN (w.columns + 7) / 8 ELSE 0 END)::numeric / layout.align) * layout.align
             + ceil(w.data / layout.align) * layout.align
             + 4 AS row_size,
           greatest(t.reltuples, 0) AS rows,
           ceil(greatest(coalesce(toast.reltuples, 0), 0) / 4) AS toast_pages,
           w.unanalyzed OR t.reltuples < 0 AS is_na
      FROM pg_class AS t
      JOIN pg_namespace AS n ON n.oid = t.relnamespace
      JOIN widths AS w ON w.oid = t.oid
      LEFT JOIN pg_class AS toast ON toast.oid = t.reltoastrelid
     CROSS JOIN layout
     WHERE n.nspname <> 'information_schema'
),
estimates AS (
    SELECT *,
           block_size * (ceil(rows / greatest(floor((block_size - 24) / row_size), 1)) + toast_pages) AS packed_size,
           block_size * (ceil(rows / greatest(floor((block_size - 24) * fillfactor / 100 / row_size), 1)) + toast_pages) AS filled_size
      FROM tables
)
SELECT current_database(),
       nspname,
       relname,
       real_size,
       greatest(real_size - packed_size, 0)::double precision,
       CASE WHEN real_size > 0 THEN 100 * greatest(real_size - packed_size, 0) / real_size ELSE 0 END::double precision,
       fillfactor,
       greatest(real_size - filled_size, 0)::double precision,
       CASE WHEN real_size > 0 THEN 100 * greatest(real_size - filled_size, 0) / real_size ELSE 0 END::double precision,
       is_na
  FROM estimates
 ORDER BY nspname, relname
$body$;
CREATE OR REPLACE VIEW metric_helpers.table_bloat AS
    SELECT * FROM metric_helpers.get_table_bloat_approx();

-- B-tree index bloat, the same way: an index tuple is its 8-byte header
-- (plus a 4-byte null bitmap when a key has nulls), the keys' average
-- width (each key's statistics are the table column's, or the index's own
-- for an expression), aligned, and a line pointer; a page holds block_size
-- less its header and the 16-byte b-tree trailer, filled up to fillfactor
-- (90 unless set); one more page is the metapage.
CREATE OR REPLACE FUNCTION metric_helpers.get_btree_bloat_approx(
    OUT i_database name,
    OUT i_schema_name name,
    OUT i_table_name name,
    OUT i_index_name name,
    OUT i_real_size numeric,
    OUT i_extra_size numeric,
    OUT i_extra_ratio double precision,
    OUT i_fill_factor integer,
    OUT i_bloat_size double precision,
    OUT i_bloat_ratio double precision,
    OUT i_is_na boolean)
RETURNS SETOF record
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
AS $body$
WITH layout AS (
    SELECT current_setting('block_size')::numeric AS block_size,
           (SELECT max_data_alignment FROM pg_control_init()) AS align
),
keys AS (
    SELECT x.indexrelid,
           sum((1 - coalesce(s.stanullfrac, 0)) * coalesce(s.stawidth, 0)) AS data,
           bool_or(coalesce(s.stanullfrac, 0) > 0) AS nullable,
           count(s.starelid) < count(*) AS unanalyzed
      FROM pg_index AS x
     CROSS JOIN LATERAL unnest(x.indkey::smallint[]) WITH ORDINALITY AS k (attnum, position)
      LEFT JOIN pg_statistic AS s
        ON NOT s.stainherit
       AND ((k.attnum > 0 AND s.starelid = x.indrelid AND s.staattnum = k.attnum)
         OR (k.attnum = 0 AND s.starelid = x.indexrelid AND s.staattnum = k.position))
     GROUP BY x.indexrelid
),
indexes AS (
    SELECT n.nspname,
           t.relname AS table_name,
           i.relname AS index_name,
           layout.block_size,
           coalesce((SELECT o.option_value::integer
                       FROM pg_options_to_table(i.reloptions) AS o
                      WHERE o.option_name = 'fillfactor'), 90) AS fillfactor,
           layout.block_size * i.relpages AS real_size,
           ceil(((CASE WHEN k.nullable THEN 12 ELSE 8 END) + k.data) / layout.align) * layout.align + 4 AS tuple_size,
           greatest(i.reltuples, 0) AS tuples,
           k.unanalyzed OR i.reltuples < 0 AS is_na
      FROM pg_index AS x
      JOIN pg_class AS i ON i.oid = x.indexrelid
      JOIN pg_am AS am ON am.oid = i.relam AND am.amname = 'btree'
      JOIN pg_class AS t ON t.oid = x.indrelid
      JOIN pg_namespace AS n ON n.oid = t.relnamespace
      JOIN keys AS k ON k.indexrelid = x.indexrelid
     CROSS JOIN layout
     WHERE i.relpages > 0
       AND n.nspname <> 'information_schema'
),
estimates AS (
    SELECT *,
           block_size * (1 + ceil(tuples / greatest(floor((block_size - 24 - 16) / tuple_size), 1))) AS packed_size,
           block_size * (1 + ceil(tuples / greatest(floor((block_size - 24 - 16) * fillfactor / 100 / tuple_size), 1))) AS filled_size
      FROM indexes
)
SELECT current_database(),
       nspname,
       table_name,
       index_name,
       real_size,
       greatest(real_size - packed_size, 0),
       (100 * greatest(real_size - packed_size, 0) / real_size)::double precision,
       fillfactor,
       greatest(real_size - filled_size, 0)::double precision,
       (100 * greatest(real_size - filled_size, 0) / real_size)::double precision,
       is_na
  FROM estimates
 ORDER BY nspname, table_name, index_name
$body$;
CREATE OR REPLACE VIEW metric_helpers.index_bloat AS
    SELECT * FROM metric_helpers.get_btree_bloat_approx();

-- pg_stat_statements of every role, for those who may not read other
-- roles' statements themselves.
CREATE OR REPLACE FUNCTION metric_helpers.pg_stat_statements(showtext boolean)
RETURNS SETOF public.pg_stat_statements
LANGUAGE sql
SECURITY DEFINER
STRICT
SET search_path TO pg_catalog, pg_temp
AS $body$
    SELECT * FROM public.pg_stat_statements(showtext)
$body$;
CREATE OR REPLACE VIEW metric_helpers.pg_stat_statements AS
    SELECT * FROM metric_helpers.pg_stat_statements(true);

-- Sequences that do not cycle, with the share of their values used, in
-- percent; those at threshold percent or more. The view's threshold is
-- Spilo's: 0.8 percent.
CREATE OR REPLACE FUNCTION metric_helpers.get_nearly_exhausted_sequences(
    IN threshold double precision,
    OUT schemaname name,
    OUT sequencename name,
    OUT seq_percent_used numeric)
RETURNS SETOF record
LANGUAGE sql
STABLE
SECURITY DEFINER
STRICT
SET search_path TO pg_catalog, pg_temp
AS $body$
SELECT schemaname, sequencename, used
  FROM (SELECT s.schemaname,
               s.sequencename,
               round(100 * (abs(s.last_value::numeric - s.start_value) / abs(s.increment_by) + 1)
                         / (floor(CASE WHEN s.increment_by > 0
                                       THEN s.max_value::numeric - s.start_value
                                       ELSE s.start_value::numeric - s.min_value
                                  END / abs(s.increment_by)) + 1),
                     2) AS used
          FROM pg_sequences AS s
         WHERE NOT s.cycle AND s.last_value IS NOT NULL) AS usage
 WHERE used >= threshold
 ORDER BY used DESC, schemaname, sequencename
$body$;
CREATE OR REPLACE VIEW metric_helpers.nearly_exhausted_sequences AS
    SELECT * FROM metric_helpers.get_nearly_exhausted_sequences(0.8);

REVOKE ALL ON ALL TABLES IN SCHEMA metric_helpers FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA metric_helpers TO :"admin", robot_zmon;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA metric_helpers FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA metric_helpers TO :"admin", robot_zmon;
