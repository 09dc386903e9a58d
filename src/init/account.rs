//! Who runs PostgreSQL and Patroni: the postgres user when we are root
//! (PostgreSQL refuses root), else whatever uid we were given. The one
//! place that decides it: the children switch to it, the volumes and the
//! files written are given to it.

use nix::unistd::{Gid, Uid, User};

use crate::files::Owner;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    pub(crate) name: String,
    /// We are root and the children switch to this account.
    pub(crate) switch: bool,
    /// The uid has an entry in /etc/passwd (else nss_wrapper gives it one).
    pub(crate) in_passwd: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("/etc/passwd: {0}")]
pub struct AccountError(String);

impl Account {
    pub(crate) fn resolve() -> Result<Self, AccountError> {
        let uid = Uid::current();
        if uid.is_root() {
            let user = User::from_name("postgres")
                .map_err(|e| AccountError(format!("cannot look up user postgres: {e}")))?
                .ok_or_else(|| {
                    AccountError(
                        "no user postgres: running as root needs one for PostgreSQL".into(),
                    )
                })?;
            return Ok(Account {
                uid: user.uid,
                gid: user.gid,
                name: user.name,
                switch: true,
                in_passwd: true,
            });
        }
        let entry = User::from_uid(uid).ok().flatten();
        Ok(Account {
            uid,
            gid: Gid::current(),
            in_passwd: entry.is_some(),
            name: entry.map_or_else(|| "postgres".to_owned(), |u| u.name),
            switch: false,
        })
    }

    /// The uid and gid a child switches to, when it switches.
    pub(crate) fn switch_to(&self) -> Option<(Uid, Gid)> {
        self.switch.then_some((self.uid, self.gid))
    }

    /// Who gets the files we write: the account when the children switch
    /// to it, else nobody (they are ours already).
    pub(crate) fn owner(&self) -> Owner {
        Owner(self.switch_to())
    }
}
