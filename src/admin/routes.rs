//! The admin listener's route table: every path, each method it answers and the
//! endpoint that answers it. The router and the `Allow` header of a 405 are both built
//! from [`ROUTES`], so what a route answers and what its 405 says it answers cannot
//! disagree. `HEAD` is listed wherever `GET` is (hyper leaves the body out).

use http::{HeaderValue, Method};

/// What answers a request: one function each in [`super::endpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Health,
    Ready,
    Metrics,
    Tenants,
    Tenant,
    Settings,
    GenerateToken,
    RevokeToken,
    WhoAmI,
    Cluster,
    OpenApi,
    ReloadTls,
    Reload,
    UiAsset,
    UiRedirect,
}

/// One path and what answers each method on it.
#[derive(Debug)]
pub(super) struct Route {
    pub path: &'static str,
    pub methods: &'static [(Method, Endpoint)],
}

/// `GET` and `HEAD`, both answered by `endpoint`.
const fn read(endpoint: Endpoint) -> [(Method, Endpoint); 2] {
    [(Method::GET, endpoint), (Method::HEAD, endpoint)]
}

/// Every admin route.
pub(super) static ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        methods: &read(Endpoint::Health),
    },
    Route {
        path: "/readyz",
        methods: &read(Endpoint::Ready),
    },
    Route {
        path: "/metrics",
        methods: &read(Endpoint::Metrics),
    },
    Route {
        path: "/admin/v1/tenants",
        methods: &read(Endpoint::Tenants),
    },
    Route {
        path: "/admin/v1/tenants/{tenant}",
        methods: &read(Endpoint::Tenant),
    },
    Route {
        path: "/admin/v1/tenants/{tenant}/settings",
        methods: &[(Method::PUT, Endpoint::Settings)],
    },
    Route {
        path: "/admin/v1/tenants/{tenant}/token",
        methods: &[
            (Method::POST, Endpoint::GenerateToken),
            (Method::DELETE, Endpoint::RevokeToken),
        ],
    },
    Route {
        path: "/admin/v1/whoami",
        methods: &read(Endpoint::WhoAmI),
    },
    Route {
        path: "/admin/v1/cluster",
        methods: &read(Endpoint::Cluster),
    },
    Route {
        path: "/admin/v1/reload",
        methods: &[(Method::POST, Endpoint::Reload)],
    },
    Route {
        path: "/admin/v1/openapi.json",
        methods: &read(Endpoint::OpenApi),
    },
    Route {
        path: "/admin/v1/reload-tls",
        methods: &[(Method::POST, Endpoint::ReloadTls)],
    },
    Route {
        path: "/admin",
        methods: &read(Endpoint::UiRedirect),
    },
    Route {
        path: "/admin/",
        methods: &read(Endpoint::UiRedirect),
    },
    Route {
        path: "/admin/ui",
        methods: &read(Endpoint::UiRedirect),
    },
    Route {
        path: "/admin/ui/",
        methods: &read(Endpoint::UiAsset),
    },
    Route {
        path: "/admin/ui/{*asset}",
        methods: &read(Endpoint::UiAsset),
    },
];

/// A route as the router holds it: its endpoints and its `Allow` value.
#[derive(Debug)]
pub(super) struct Entry {
    methods: &'static [(Method, Endpoint)],
    allow: HeaderValue,
}

impl Entry {
    fn new(route: &Route) -> Entry {
        let names: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
        let allow = HeaderValue::from_str(&names.join(", ")).expect("method names are tokens");
        Entry {
            methods: route.methods,
            allow,
        }
    }

    /// The endpoint answering `method` here; `None`: 405.
    pub fn endpoint(&self, method: &Method) -> Option<Endpoint> {
        let found = self.methods.iter().find(|(m, _)| m == method);
        found.map(|(_, endpoint)| *endpoint)
    }

    /// Whether this is `/healthz`, `/readyz` or `/metrics`, which the status listener
    /// serves too.
    pub fn is_probe(&self) -> bool {
        let probe = |(_, e): &(Method, Endpoint)| {
            matches!(e, Endpoint::Health | Endpoint::Ready | Endpoint::Metrics)
        };
        self.methods.iter().all(probe)
    }

    /// The `Allow` header of a 405 here: the methods of this route, in table order.
    pub fn allow(&self) -> &HeaderValue {
        &self.allow
    }
}

/// The router over [`ROUTES`].
pub(super) fn router() -> matchit::Router<Entry> {
    let mut router = matchit::Router::new();
    for route in ROUTES {
        router
            .insert(route.path, Entry::new(route))
            .expect("admin routes are distinct");
    }
    router
}
