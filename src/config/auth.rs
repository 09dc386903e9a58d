//! Users, pg_hba and PAM OAuth2: who may connect, and how.

use super::env::{Vars, parse_bool, set};
use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// `PAM_OAUTH2`: `<https tokeninfo URL> <login field> [key=value ...]`,
/// plus the module's options (see extensions/pam_oauth2/README.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PamOauth2 {
    pub(crate) arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Auth {
    pub(crate) superuser: Credentials,
    pub(crate) replication: Credentials,
    pub(crate) admin: Credentials,
    pub(crate) human_role: String,
    pub(crate) pam_oauth2: Option<PamOauth2>,
    pub(crate) allow_nossl: bool,
}

impl Auth {
    pub(crate) fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let auth = Auth {
            superuser: credentials(
                ("PGUSER_SUPERUSER", &vars.pguser_superuser, "postgres"),
                (&vars.pgpassword_superuser, "zalando"),
            )?,
            replication: credentials(
                ("PGUSER_STANDBY", &vars.pguser_standby, "standby"),
                (&vars.pgpassword_standby, "standby"),
            )?,
            admin: credentials(
                ("PGUSER_ADMIN", &vars.pguser_admin, "admin"),
                (&vars.pgpassword_admin, "cola"),
            )?,
            human_role: role_name("HUMAN_ROLE", &vars.human_role, "zalandos")?,
            pam_oauth2: set(&vars.pam_oauth2).map(PamOauth2::parse).transpose()?,
            allow_nossl: parse_bool("ALLOW_NOSSL", &vars.allow_nossl)?,
        };
        auth.check_distinct_roles()?;
        Ok(auth)
    }

    /// The hooks reset admin and HUMAN_ROLE to NOLOGIN roles on every
    /// promotion: naming the superuser or the replication user (or a role
    /// the hooks make for themselves) would lock Patroni or the replicas out.
    fn check_distinct_roles(&self) -> Result<(), ConfigError> {
        let taken = [
            ("PGUSER_SUPERUSER", self.superuser.username.as_str()),
            ("PGUSER_STANDBY", self.replication.username.as_str()),
            ("the hooks' role", "cron_admin"),
            ("the hooks' role", "robot_zmon"),
        ];
        for (var, name) in [
            ("PGUSER_ADMIN", self.admin.username.as_str()),
            ("HUMAN_ROLE", self.human_role.as_str()),
        ] {
            if let Some((other, _)) = taken.iter().find(|(_, t)| *t == name) {
                return Err(ConfigError::invalid(
                    var,
                    name,
                    format!("is {other} too: it must be a role of its own (it is made NOLOGIN)"),
                ));
            }
        }
        if self.superuser.username == self.replication.username {
            return Err(ConfigError::invalid(
                "PGUSER_STANDBY",
                &self.replication.username,
                "is PGUSER_SUPERUSER too: replication needs a user of its own",
            ));
        }
        Ok(())
    }

    /// The default pg_hba, top to bottom, as the contract lists it.
    pub(crate) fn default_hba(&self) -> Vec<String> {
        let human = &self.human_role;
        let standby = &self.replication.username;
        let pam = self.pam_oauth2.is_some();
        let mut hba = vec!["local all all trust".to_owned()];
        for addr in ["127.0.0.1/32", "::1/128"] {
            if pam {
                hba.push(format!("hostssl all +{human} {addr} pam"));
            }
            hba.push(format!("host all all {addr} md5"));
        }
        hba.push(format!("local replication {standby} trust"));
        hba.push(format!("hostssl replication {standby} all md5"));
        if !self.allow_nossl {
            hba.push("hostnossl all all all reject".into());
        }
        if pam {
            hba.push(format!("hostssl all +{human} all pam"));
        }
        let method = if self.allow_nossl { "host" } else { "hostssl" };
        hba.push(format!("{method} all all all md5"));
        hba
    }

    /// Whether a pg_hba list lets the replication user in over the network
    /// (a replica streams from the primary's address, not its socket).
    pub(crate) fn hba_allows_replication(&self, hba: &[String]) -> bool {
        hba.iter().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, databases, users, ..] = fields.as_slice() else {
                return false;
            };
            kind.starts_with("host")
                && *kind != "hostnossl"
                && databases.split(',').any(|d| d == "replication")
                && users
                    .split(',')
                    .any(|u| u == "all" || u == self.replication.username || u.starts_with('+'))
                && !line.split_whitespace().any(|f| f == "reject")
        })
    }
}

impl PamOauth2 {
    /// Checks the value with the module's own parser, on the arguments
    /// libpam will pass it from the rendered line, so that configure
    /// refuses exactly what the module would refuse at every login.
    fn parse(raw: &str) -> Result<Self, ConfigError> {
        let arguments = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        pam_oauth2_args::Config::parse_pam_arguments(&arguments)
            .map_err(|e| ConfigError::invalid("PAM_OAUTH2", raw, e.to_string()))?;
        Ok(PamOauth2 { arguments })
    }
}

/// A role and its password, each with Spilo's default.
fn credentials(
    (user_var, user, default_user): (&str, &Option<String>, &str),
    (password, default_password): (&Option<String>, &str),
) -> Result<Credentials, ConfigError> {
    Ok(Credentials {
        username: role_name(user_var, user, default_user)?,
        password: set(password).unwrap_or(default_password).to_owned(),
    })
}

fn role_name(var: &str, value: &Option<String>, default: &str) -> Result<String, ConfigError> {
    let name = set(value).unwrap_or(default);
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '"')
    {
        return Err(ConfigError::invalid(var, name, "not a usable role name"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(f: impl FnOnce(&mut Vars)) -> Result<Auth, ConfigError> {
        let mut vars = Vars::default();
        f(&mut vars);
        Auth::from_vars(&vars)
    }

    const PAM: &str =
        "https://info.example.com/oauth2/tokeninfo?access_token= uid realm=/employees";

    #[test]
    fn defaults() {
        let a = auth(|_| {}).unwrap();
        assert_eq!(
            a.superuser,
            Credentials {
                username: "postgres".into(),
                password: "zalando".into()
            }
        );
        assert_eq!(
            a.replication,
            Credentials {
                username: "standby".into(),
                password: "standby".into()
            }
        );
        assert_eq!(
            a.admin,
            Credentials {
                username: "admin".into(),
                password: "cola".into()
            }
        );
        assert_eq!(a.human_role, "zalandos");
        assert!(a.pam_oauth2.is_none());
        assert!(!a.allow_nossl);
    }

    #[test]
    fn hba_default() {
        let a = auth(|_| {}).unwrap();
        assert_eq!(
            a.default_hba(),
            [
                "local all all trust",
                "host all all 127.0.0.1/32 md5",
                "host all all ::1/128 md5",
                "local replication standby trust",
                "hostssl replication standby all md5",
                "hostnossl all all all reject",
                "hostssl all all all md5",
            ]
        );
    }

    #[test]
    fn hba_with_pam() {
        let a = auth(|v| {
            v.pam_oauth2 = Some(PAM.into());
            v.human_role = Some("humans".into());
        })
        .unwrap();
        assert_eq!(
            a.default_hba(),
            [
                "local all all trust",
                "hostssl all +humans 127.0.0.1/32 pam",
                "host all all 127.0.0.1/32 md5",
                "hostssl all +humans ::1/128 pam",
                "host all all ::1/128 md5",
                "local replication standby trust",
                "hostssl replication standby all md5",
                "hostnossl all all all reject",
                "hostssl all +humans all pam",
                "hostssl all all all md5",
            ]
        );
    }

    #[test]
    fn hba_allow_nossl() {
        let a = auth(|v| v.allow_nossl = Some("on".into())).unwrap();
        let hba = a.default_hba();
        assert!(!hba.iter().any(|l| l.contains("reject")));
        assert_eq!(hba.last().unwrap(), "host all all all md5");
        // Spilo's bug: "false" is not true.
        let a = auth(|v| v.allow_nossl = Some("false".into())).unwrap();
        assert!(
            a.default_hba()
                .contains(&"hostnossl all all all reject".to_owned())
        );
    }

    #[test]
    fn replication_rule_detection() {
        let a = auth(|_| {}).unwrap();
        assert!(a.hba_allows_replication(&a.default_hba()));
        let user = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!a.hba_allows_replication(&user(&["local all all trust", "host all all all md5"])));
        assert!(!a.hba_allows_replication(&user(&["local replication standby trust"])));
        assert!(
            a.hba_allows_replication(&user(&["host replication all 10.0.0.0/8 scram-sha-256"]))
        );
        assert!(!a.hba_allows_replication(&user(&["host replication standby all reject"])));
    }

    #[test]
    fn pam_oauth2_rules() {
        let a = auth(|v| v.pam_oauth2 = Some(format!("  {PAM} "))).unwrap();
        assert_eq!(a.pam_oauth2.unwrap().arguments, PAM);
        let a = auth(|v| v.pam_oauth2 = Some(format!("{PAM}\n debug\ttimeout=2"))).unwrap();
        assert_eq!(
            a.pam_oauth2.unwrap().arguments,
            format!("{PAM} debug timeout=2")
        );
        for bad in [
            "http://info.example.com/tokeninfo uid",
            "https://info.example.com/tokeninfo",
            "https:// uid",
            "info.example.com uid",
            "https://info.example.com/t uid realm",
        ] {
            let err = auth(|v| v.pam_oauth2 = Some(bad.into()))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("PAM_OAUTH2={bad}:")), "{err}");
        }
    }

    #[test]
    fn role_names_are_checked() {
        let err = auth(|v| v.human_role = Some("a b".into())).unwrap_err();
        assert_eq!(err.to_string(), "HUMAN_ROLE=a b: not a usable role name");
    }
}
