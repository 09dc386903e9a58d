//! Which SQL runs where, and in what order. The roles come first, as
//! everything else grants to them; then the csv log tables in the database
//! the first connection went to (Patroni's, `postgres`), pg_cron in the
//! database its scheduler reads, ZMON's helpers where the log tables are
//! (after pg_cron, whose jobs they report), and the helpers in every
//! database that takes connections (template1 too, so that databases
//! created later have them). Every file is idempotent: a second run
//! changes nothing.

use super::HookError;
use super::facts::Facts;
use super::psql::Psql;

const ROLES: &[&str] = &[include_str!("../../../image/sql/roles.sql")];
const LOGS: &[&str] = &[include_str!("../../../image/sql/postgres_log.sql")];
const CRON: &[&str] = &[include_str!("../../../image/sql/cron.sql")];
const ZMON: &[&str] = &[include_str!("../../../image/sql/zmon_utils.sql")];
const HELPERS: &[&str] = &[
    include_str!("../../../image/sql/extensions.sql"),
    include_str!("../../../image/sql/user_management.sql"),
    include_str!("../../../image/sql/metric_helpers.sql"),
];

/// One psql session's work.
#[derive(Debug, PartialEq)]
struct Step<'a> {
    what: String,
    /// None: the first connection's database.
    database: Option<&'a str>,
    sql: &'static [&'static str],
}

/// The roles, then every other step; a step that fails (a broken database,
/// say) does not keep the others from running, and the failures are
/// reported together.
pub(crate) fn apply(psql: &Psql, facts: &Facts) -> Result<(), HookError> {
    psql.run("roles", None, ROLES)?;
    let failed: Vec<HookError> = steps(facts)
        .iter()
        .filter_map(|step| psql.run(&step.what, step.database, step.sql).err())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(HookError::Steps(failed))
    }
}

fn steps(facts: &Facts) -> Vec<Step<'_>> {
    let mut steps = vec![Step {
        what: "postgres_log tables".to_owned(),
        database: None,
        sql: LOGS,
    }];
    if let Some(database) = &facts.cron_database {
        steps.push(Step {
            what: format!("pg_cron in {database}"),
            database: Some(database),
            sql: CRON,
        });
    }
    steps.push(Step {
        what: "zmon_utils".to_owned(),
        database: None,
        sql: ZMON,
    });
    steps.extend(facts.databases.iter().map(|database| Step {
        what: format!("helpers in {database}"),
        database: Some(database),
        sql: HELPERS,
    }));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cron_database: Option<&str>) -> Facts {
        Facts {
            in_recovery: false,
            databases: vec!["postgres".into(), "template1".into()],
            cron_database: cron_database.map(str::to_owned),
        }
    }

    fn summary<'a>(steps: &[Step<'a>]) -> Vec<(String, Option<&'a str>)> {
        steps.iter().map(|s| (s.what.clone(), s.database)).collect()
    }

    #[test]
    fn logs_cron_zmon_then_helpers_in_every_database() {
        let facts = facts(Some("postgres"));
        let steps = steps(&facts);
        assert_eq!(
            summary(&steps),
            [
                ("postgres_log tables".to_owned(), None),
                ("pg_cron in postgres".to_owned(), Some("postgres")),
                ("zmon_utils".to_owned(), None),
                ("helpers in postgres".to_owned(), Some("postgres")),
                ("helpers in template1".to_owned(), Some("template1")),
            ]
        );
        assert_eq!(steps[1].sql, CRON);
        assert_eq!(steps[4].sql, HELPERS);
    }

    #[test]
    fn no_pg_cron_no_cron_step() {
        let facts = facts(None);
        assert!(steps(&facts).iter().all(|s| s.sql != CRON));
    }
}
