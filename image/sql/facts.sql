-- What the hooks ask the server before they change anything, as one JSON
-- object: whether it accepts writes yet, every database that takes
-- connections (template1 included, so that new databases inherit the
-- helpers), and the database pg_cron's scheduler reads when this major
-- ships pg_cron and the server preloads it (null otherwise).
SELECT pg_catalog.json_build_object(
    'in_recovery', pg_catalog.pg_is_in_recovery(),
    'databases', (SELECT pg_catalog.json_agg(datname ORDER BY datname)
                    FROM pg_catalog.pg_database
                   WHERE datallowconn),
    'cron_database', (SELECT COALESCE(pg_catalog.current_setting('cron.database_name', true), 'postgres')
                       WHERE EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'pg_cron')
                         AND 'pg_cron' = ANY (pg_catalog.string_to_array(
                                 pg_catalog.translate(pg_catalog.current_setting('shared_preload_libraries'), ' "', ''),
                                 ',')))
);
