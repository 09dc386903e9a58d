//! A passwd entry for an arbitrary uid without touching /etc/passwd (the
//! root filesystem may be read-only): copies of passwd and group under
//! RW_DIR with our uid added, given to the children through nss_wrapper.
//! initdb, PostgreSQL and Python's getpass all want a name for the uid.

use std::path::{Path, PathBuf};

use crate::config::Paths;
use crate::files::{self, IoError};
use crate::render::Output;

use super::account::Account;

/// Where the system files are read from (tests point elsewhere).
pub(crate) struct Sources<'a> {
    pub(crate) passwd: &'a str,
    pub(crate) group: &'a str,
}

pub(crate) const SYSTEM: Sources<'static> = Sources {
    passwd: "/etc/passwd",
    group: "/etc/group",
};

/// Writes the files when the uid has no entry and returns the variables
/// that make the children use them (none when it has one).
pub(crate) fn prepare(
    account: &Account,
    paths: &Paths,
    library: &str,
    sources: &Sources,
) -> Result<Vec<(String, String)>, IoError> {
    if account.in_passwd {
        return Ok(Vec::new());
    }
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(IoError::at("read", Path::new(path)));
    let (passwd, group) = entries(
        account,
        &paths.pghome,
        &read(sources.passwd)?,
        &read(sources.group)?,
    );
    let passwd_path = paths.nss_passwd();
    let group_path = paths.nss_group();
    let file = |path: &PathBuf, text: String| Output::File {
        path: path.clone(),
        contents: text.into_bytes(),
        mode: 0o644,
        redacted: None,
    };
    files::write_all(
        &[file(&passwd_path, passwd), file(&group_path, group)],
        account.owner(),
    )?;
    Ok(vec![
        ("LD_PRELOAD".into(), library.to_owned()),
        (
            "NSS_WRAPPER_PASSWD".into(),
            passwd_path.display().to_string(),
        ),
        ("NSS_WRAPPER_GROUP".into(), group_path.display().to_string()),
    ])
}

/// The system's passwd with `account` as the user (replacing any entry
/// of the same name), and its group with the gid named if it is not.
fn entries(account: &Account, home: &Path, passwd: &str, group: &str) -> (String, String) {
    let name = &account.name;
    let mut users: String = passwd
        .lines()
        .filter(|line| line.split(':').next() != Some(name.as_str()))
        .map(|line| format!("{line}\n"))
        .collect();
    users.push_str(&format!(
        "{name}:x:{}:{}:PostgreSQL:{}:/bin/sh\n",
        account.uid,
        account.gid,
        home.display()
    ));
    let gid = account.gid.to_string();
    let mut groups: String = group.lines().map(|line| format!("{line}\n")).collect();
    if !group
        .lines()
        .any(|line| line.split(':').nth(2) == Some(gid.as_str()))
    {
        groups.push_str(&format!("{name}:x:{gid}:\n"));
    }
    (users, groups)
}

#[cfg(test)]
mod tests {
    use nix::unistd::{Gid, Uid};

    use super::*;

    fn account(gid: u32) -> Account {
        Account {
            uid: Uid::from_raw(12345),
            gid: Gid::from_raw(gid),
            name: "postgres".into(),
            switch: false,
            in_passwd: false,
        }
    }

    #[test]
    fn our_uid_replaces_the_image_user() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
        let group = "root:x:0:\npostgres:x:104:\n";
        let (users, groups) = entries(&account(0), Path::new("/home/postgres"), passwd, group);
        assert_eq!(
            users,
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:12345:0:PostgreSQL:/home/postgres:/bin/sh\n"
        );
        assert_eq!(groups, group);
        let (_, groups) = entries(&account(5000), Path::new("/h"), passwd, group);
        assert!(groups.ends_with("postgres:x:5000:\n"), "{groups}");
    }

    #[test]
    fn a_known_uid_needs_nothing() {
        let known = Account {
            in_passwd: true,
            ..account(0)
        };
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_vars(&crate::config::env::Vars {
            rw_dir: Some(dir.path().display().to_string()),
            ..Default::default()
        })
        .unwrap();
        let env = prepare(&known, &paths, "libnss_wrapper.so", &SYSTEM).unwrap();
        assert!(env.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
