//! Services and EndpointSlices from the API by list + watch (kube's watcher, reflected into
//! stores); every event rebuilds the zone and swaps it in. Rebuilding is O(Services +
//! endpoints), a few microseconds for a lab, and keeps the zone a pure function of the stores.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};

use super::handler::Shared;
use super::zone;

/// Watches until the process ends; watch errors are retried by kube's default backoff.
pub(crate) async fn run(api: &str, zone: Shared) -> anyhow::Result<()> {
    let config = kube::Config::new(api.parse()?);
    let client = Client::try_from(config)?;
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_events = reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let slice_events = reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let mut events = std::pin::pin!(futures::stream::select(svc_events, slice_events));
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            eprintln!("dns: watch: {e}");
            continue;
        }
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let eps: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
        let next = zone::build(&svcs, &eps);
        *zone
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    }
    anyhow::bail!("the watch streams ended")
}
