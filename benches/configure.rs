//! `spilo configure` of the basic operator fixture: the model, the
//! rendering, and the whole run with writes (the target is 5 ms
//! for the whole process; see README for the process-level figure).

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use spilo::config::{Config, Env, System};
use spilo::configure::{self, Options};
use spilo::render::{self, Section};

fn fixture_env(rw_dir: &Path) -> Env {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/operator/basic.env"
    );
    let text = std::fs::read_to_string(path).expect("the operator fixture is readable");
    let mut pairs: Vec<(String, String)> = Env::from_env_file(&text)
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    pairs.push(("RW_DIR".into(), rw_dir.display().to_string()));
    pairs.push(("PGHOME".into(), rw_dir.join("home").display().to_string()));
    Env::from_pairs(pairs)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("pg");
    std::fs::create_dir_all(root.join("17/bin")).expect("fixture tree");
    let env = fixture_env(&dir.path().join("rw"));
    let system = System {
        postgres_root: root.clone(),
        ..System::default()
    };

    c.bench_function("model (Config::build)", |b| {
        b.iter(|| Config::build(&env, &system).expect("valid"))
    });
    let config = Config::build(&env, &system).expect("valid");
    c.bench_function("render all sections", |b| {
        b.iter(|| render::plan(&config, &[Section::All]).expect("renders"))
    });
    let options = Options {
        sections: vec![Section::All],
        dry_run: false,
        show_secrets: false,
        postgres_root: root,
    };
    c.bench_function("configure all (model, render, write)", |b| {
        b.iter(|| {
            configure::run(&env, &options, &mut std::io::sink(), &mut |_| {}).expect("configures")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
