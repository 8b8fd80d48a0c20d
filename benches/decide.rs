//! The auth decision for a protected request carrying the tenant's valid token: path
//! normalisation, route match, tenant lookup, Bearer parse, SHA-256 and constant-time
//! compare — with the default routes (every method, case-insensitive) and, for
//! comparison, the same routes compared case-sensitively; then the same decision plus
//! what the proxy does after an accepted one: record the token's last use (an atomic
//! load, and a store only when the second changed). Run: `cargo bench --bench decide`.

use std::hint::black_box;

use authgate::auth::decide::{decide, Outcome};
use authgate::auth::token::{self, TOKEN_PREFIX};
use authgate::config::ProtectedRoute;
use authgate::routes::RouteTable;
use authgate::state::{Command, Mode, Snapshot, State, TokenRecord};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;

fn bench(c: &mut Criterion) {
    let defaults = [
        "/m2/{client}/profile/batchUpdate",
        "/m2/{client}/v2/profile/batchUpdate",
    ]
    .map(|path| ProtectedRoute {
        methods: Vec::new(),
        path: path.into(),
    });
    let routes = RouteTable::new(&defaults, true, Some("client".into()));
    let case_sensitive = RouteTable::new(&defaults, false, Some("client".into()));
    let secret = token::generate(TOKEN_PREFIX).unwrap();
    let mut state = State::default();
    // A realistic deployment: many tenants, one of them ours.
    for i in 0..1000 {
        state = state.apply(&Command::SetMode {
            tenant: format!("tenant-{i}"),
            mode: Mode::On,
        });
    }
    state = state
        .apply(&Command::SetMode {
            tenant: "acme".into(),
            mode: Mode::On,
        })
        .apply(&Command::SetToken {
            tenant: "acme".into(),
            token: TokenRecord {
                digest: secret.digest,
                created_at_ms: 0,
                expires_at_ms: u64::MAX,
            },
            previous_valid_until_ms: None,
        });
    let snapshot = Snapshot::new(state);
    let (head, ()) = Request::post("/m2/acme/v2/profile/batchUpdate")
        .header("host", "profiles.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {}", secret.value))
        .body(())
        .unwrap()
        .into_parts();
    assert_eq!(
        decide(&routes, &snapshot, &head, 1).outcome,
        Outcome::Allowed
    );

    c.bench_function("decide/protected_valid_token", |b| {
        b.iter(|| {
            decide(
                black_box(&routes),
                black_box(&snapshot),
                black_box(&head),
                1,
            )
            .outcome
        })
    });
    c.bench_function("decide/protected_valid_token_case_sensitive", |b| {
        b.iter(|| {
            decide(
                black_box(&case_sensitive),
                black_box(&snapshot),
                black_box(&head),
                1,
            )
            .outcome
        })
    });
    c.bench_function("decide/protected_valid_token_and_last_use", |b| {
        let now_ms = 1_700_000_000_000;
        b.iter(|| {
            let decision = decide(
                black_box(&routes),
                black_box(&snapshot),
                black_box(&head),
                black_box(now_ms),
            );
            if let Some(used) = decision.used {
                used.touch(now_ms / 1000);
            }
            decision.outcome
        })
    });
    // What the proxy adds per accepted request, alone: within one second a relaxed load
    // and a compare; the store (an atomic max) happens once per second.
    let cell = authgate::state::LastUse::default();
    cell.touch(1_700_000_000);
    c.bench_function("last_use/touch_same_second", |b| {
        b.iter(|| black_box(&cell).touch(black_box(1_700_000_000)))
    });
    let (open, ()) = Request::get("/rest/v1/profiles/thirdPartyId/v1?client=acme")
        .body(())
        .unwrap()
        .into_parts();
    c.bench_function("decide/unprotected", |b| {
        b.iter(|| {
            decide(
                black_box(&routes),
                black_box(&snapshot),
                black_box(&open),
                1,
            )
            .outcome
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
