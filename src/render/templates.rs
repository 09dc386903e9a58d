//! The templates under image/templates, compiled into the binary so that
//! the binary alone is enough.

use minijinja::{AutoEscape, Environment};

const TEMPLATES: [(&str, &str); 4] = [
    (
        "patroni.yml.j2",
        include_str!("../../image/templates/patroni.yml.j2"),
    ),
    (
        "pam-postgresql.j2",
        include_str!("../../image/templates/pam-postgresql.j2"),
    ),
    (
        "pgbouncer.ini.j2",
        include_str!("../../image/templates/pgbouncer.ini.j2"),
    ),
    (
        "userlist.txt.j2",
        include_str!("../../image/templates/userlist.txt.j2"),
    ),
];

/// Renders one template with a serializable context.
pub(crate) fn render(
    name: &str,
    context: impl serde::Serialize,
) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    // Values are quoted explicitly (tojson), never by file type.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let source = TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            minijinja::Error::new(minijinja::ErrorKind::TemplateNotFound, name.to_owned())
        })?;
    env.render_str(source, context)
}
