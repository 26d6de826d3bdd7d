//! Paging through the list of runs: keyset pages that neither repeat nor
//! skip a run, whatever is created between them, with the filter held.

use super::lifecycle::request;
use super::*;
use crate::store::{ListCursor, ListFilter, MAX_LIST_PAGE, RunPage};

/// Creates a run of `workflow_type` at `now_ms` with `attributes`, and returns its id.
async fn create(
    store: &dyn Store,
    workflow_id: &str,
    workflow_type: &str,
    now_ms: u64,
    attributes: Value,
) -> RunId {
    let (r, run) = request(
        workflow_id,
        workflow_type,
        now_ms,
        RunOptions {
            search_attributes: attributes,
            ..RunOptions::default()
        },
    );
    store.create_run(r).await.expect("create_run");
    run.id
}

async fn page(store: &dyn Store, filter: &ListFilter) -> RunPage {
    store.list_runs(filter).await.expect("list_runs")
}

/// Every page of `filter` from its start, `limit` runs at a time: the runs
/// of each, in order. Asserts that every page but the last is full and
/// that the last says there is no next.
async fn pages(store: &dyn Store, filter: &ListFilter, limit: u32) -> Vec<Vec<RunId>> {
    let mut filter = ListFilter {
        limit,
        after: None,
        ..filter.clone()
    };
    let mut all = Vec::new();
    loop {
        let p = page(store, &filter).await;
        let ids: Vec<RunId> = p.runs.iter().map(|r| r.run_id.clone()).collect();
        match p.next {
            Some(next) => {
                assert_eq!(ids.len(), limit as usize, "a page with a next is full");
                assert_eq!(
                    Some(&next),
                    p.runs.last().map(ListCursor::of).as_ref(),
                    "the next page starts after this page's last run"
                );
                filter.after = Some(next);
                all.push(ids);
            }
            None => {
                all.push(ids);
                return all;
            }
        }
        assert!(all.len() <= 1_000, "paging never ends");
    }
}

/// The whole list in one page (the tests here stay under the page limit).
async fn whole(store: &dyn Store, filter: &ListFilter) -> Vec<RunId> {
    let p = page(
        store,
        &ListFilter {
            limit: MAX_LIST_PAGE,
            ..filter.clone()
        },
    )
    .await;
    assert_eq!(p.next, None, "the whole list fits one page");
    p.runs.into_iter().map(|r| r.run_id).collect()
}

pub async fn pages_return_each_run_once_in_order(store: &dyn Store) {
    // Three runs at each instant: the run id breaks the ties.
    let mut created = Vec::new();
    for i in 0..23u64 {
        created.push(
            create(
                store,
                &format!("wf-page-{i}"),
                "order",
                T0 + i / 3,
                json!({}),
            )
            .await,
        );
    }
    let everything = whole(store, &ListFilter::default()).await;
    let mut sorted = everything.clone();
    sorted.sort();
    created.sort();
    assert_eq!(sorted, created, "the whole list holds every run once");
    let all = page(
        store,
        &ListFilter {
            limit: MAX_LIST_PAGE,
            ..ListFilter::default()
        },
    )
    .await;
    assert!(
        all.runs
            .windows(2)
            .all(|w| w[0].created_at_ms >= w[1].created_at_ms),
        "newest first"
    );
    for limit in [1, 2, 3, 5, 7, 22, 23, 24] {
        let paged = pages(store, &ListFilter::default(), limit).await;
        assert_eq!(
            paged.concat(),
            everything,
            "pages of {limit}: each run exactly once, in the list's order"
        );
        assert_eq!(
            paged.len(),
            23usize.div_ceil(limit as usize).max(1),
            "pages of {limit}: no empty last page when the runs fill the pages exactly"
        );
    }
}

pub async fn runs_created_between_pages_neither_repeat_nor_skip_older_ones(store: &dyn Store) {
    for i in 0..10u64 {
        create(store, &format!("wf-older-{i}"), "order", T0 + i, json!({})).await;
    }
    let older = whole(store, &ListFilter::default()).await;
    let mut filter = ListFilter {
        limit: 4,
        ..ListFilter::default()
    };
    let mut seen = Vec::new();
    let mut newer = Vec::new();
    let mut round = 0u64;
    loop {
        let p = page(store, &filter).await;
        seen.extend(p.runs.iter().map(|r| r.run_id.clone()));
        let Some(next) = p.next else { break };
        // Between pages: runs created now, and one created at the same
        // instant as the last run seen (its id decides its side of the cursor).
        round += 1;
        newer.push(
            create(
                store,
                &format!("wf-newer-{round}"),
                "order",
                T0 + 100 + round,
                json!({}),
            )
            .await,
        );
        let tie = create(
            store,
            &format!("wf-tie-{round}"),
            "order",
            next.created_at_ms,
            json!({}),
        )
        .await;
        filter.after = Some(next);
        newer.push(tie);
    }
    let fresh = whole(store, &ListFilter::default()).await;
    let position = |id: &RunId| fresh.iter().position(|r| r == id).expect("listed");
    // Every older run once, in order; a run created meanwhile is seen only
    // if it sorts after the page it was created behind, and then once.
    let seen_older: Vec<RunId> = seen.iter().filter(|r| older.contains(r)).cloned().collect();
    assert_eq!(seen_older, older, "every older run exactly once, in order");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no run twice: {seen:?}");
    assert!(
        seen.windows(2).all(|w| position(&w[0]) < position(&w[1])),
        "the pages keep the list's order: {seen:?}"
    );
    for r in &newer {
        assert!(fresh.contains(r), "a new list from the start shows {r}");
    }
}

pub async fn filters_hold_across_pages(store: &dyn Store) {
    for i in 0..15u64 {
        let (workflow_type, customer) = match i % 3 {
            0 => ("invoice", "ada"),
            1 => ("order", "ada"),
            _ => ("order", "bob"),
        };
        create(
            store,
            &format!("wf-filter-{i}"),
            workflow_type,
            T0 + i,
            json!({ "customer": customer }),
        )
        .await;
    }
    let orders = ListFilter {
        workflow_type: Some("order".into()),
        ..ListFilter::default()
    };
    let ada_orders = ListFilter {
        workflow_type: Some("order".into()),
        search_attributes: vec![("customer".into(), json!("ada"))],
        ..ListFilter::default()
    };
    let running = ListFilter {
        status: Some(RunStatus::Running),
        ..ListFilter::default()
    };
    for (filter, expected) in [(orders, 10), (ada_orders, 5), (running, 15)] {
        let everything = whole(store, &filter).await;
        assert_eq!(everything.len(), expected, "{filter:?}");
        let paged = pages(store, &filter, 2).await.concat();
        assert_eq!(paged, everything, "pages of 2 of {filter:?}");
        for id in &paged {
            let run = store.run(id).await.expect("run");
            if let Some(t) = &filter.workflow_type {
                assert_eq!(&run.workflow_type, t);
            }
            for (key, value) in &filter.search_attributes {
                assert_eq!(&run.search_attributes[key], value);
            }
        }
    }
}

pub async fn a_page_holds_at_most_a_thousand_runs(store: &dyn Store) {
    let n = u64::from(MAX_LIST_PAGE) + 2;
    for i in 0..n {
        let (r, _) = request(
            &format!("wf-bulk-{i}"),
            "bulk",
            T0 + i,
            RunOptions::default(),
        );
        store.create_run(r).await.expect("create_run");
    }
    let first = page(
        store,
        &ListFilter {
            limit: u32::MAX,
            ..ListFilter::default()
        },
    )
    .await;
    assert_eq!(
        first.runs.len(),
        MAX_LIST_PAGE as usize,
        "a larger limit gets the maximum"
    );
    let next = first.next.expect("a next page");
    let rest = page(
        store,
        &ListFilter {
            after: Some(next),
            ..ListFilter::default()
        },
    )
    .await;
    assert_eq!(
        rest.runs.len(),
        2,
        "limit 0 gets the default, and the rest fit"
    );
    assert_eq!(rest.next, None);
    assert_eq!(rest.runs[1].workflow_id, "wf-bulk-0", "the oldest last");
    let default = page(store, &ListFilter::default()).await;
    assert_eq!(default.runs.len(), 100, "limit 0 means 100");
    assert!(default.next.is_some());
}
