//! Thirty days of onboarding in milliseconds: who gets which e-mail, on which day.

use onboarding::{Profile, Services, activities};
use serde_json::{Value, json};
use std::sync::Arc;
use weft::ManualClock;
use weft::model::RunId;
use weft::testing::{DEFAULT_START_MS, TestEnv, guest_wasm};

const DAY_MS: u64 = 24 * 3600 * 1000;

struct Kit {
    env: TestEnv,
    services: Services,
    module: weft::model::Sha256Hex,
}

impl Kit {
    async fn new(replay_every_activation: bool) -> Kit {
        let clock = ManualClock::new(DEFAULT_START_MS);
        let services = Services::new(Arc::new(clock.clone()));
        let mut builder = TestEnv::builder(activities(&services)).clock(clock);
        if replay_every_activation {
            builder = builder.replay_every_activation();
        }
        let env = builder.build().await.unwrap();
        let module = env
            .deploy("onboarding", &guest_wasm("onboarding-workflow").unwrap())
            .await
            .unwrap();
        Kit {
            env,
            services,
            module,
        }
    }

    async fn onboard(&self, customer: &str, profile: Profile) -> RunId {
        self.services.set_profile(customer, profile);
        let input = json!({ "customer_id": customer, "email": format!("{customer}@example.com") });
        self.env
            .start(&self.module, "onboarding", customer, input)
            .await
            .unwrap()
    }

    /// (template, day) of every e-mail sent.
    fn emails(&self) -> Vec<(String, u64)> {
        self.services
            .sent()
            .into_iter()
            .map(|s| (s.template, (s.at_ms - DEFAULT_START_MS) / DAY_MS))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_customer_with_a_complete_profile_gets_only_the_welcome() {
    let kit = Kit::new(false).await;
    let run = kit
        .onboard(
            "c-1",
            Profile {
                complete: true,
                last_active_ms: Some(DEFAULT_START_MS + 25 * DAY_MS),
            },
        )
        .await;
    let summary: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(
        summary,
        json!({ "customer_id": "c-1", "nudged": false, "win_back": false })
    );
    assert_eq!(kit.emails(), [("welcome".to_owned(), 0)]);
    assert_eq!(kit.env.now_ms(), DEFAULT_START_MS + 30 * DAY_MS);
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_profile_is_nudged_on_day_7() {
    let kit = Kit::new(false).await;
    let run = kit
        .onboard(
            "c-2",
            Profile {
                complete: false,
                last_active_ms: Some(DEFAULT_START_MS + 29 * DAY_MS),
            },
        )
        .await;
    kit.env
        .sleep(std::time::Duration::from_millis(8 * DAY_MS))
        .await
        .unwrap();
    let stage: String = kit.env.query(&run, "stage", ()).await.unwrap();
    assert_eq!(stage, "nudged");
    let record = kit.env.host().describe(&run).await.unwrap();
    assert_eq!(record.search_attributes["stage"], "nudged");
    let summary: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(summary["nudged"], true);
    assert_eq!(
        kit.emails(),
        [("welcome".to_owned(), 0), ("nudge".to_owned(), 7)]
    );
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_customer_gets_a_win_back_offer_on_day_30() {
    // Every activation replays first: thirty days of host restarts change nothing.
    let kit = Kit::new(true).await;
    let run = kit
        .onboard(
            "c-3",
            Profile {
                complete: false,
                last_active_ms: Some(DEFAULT_START_MS + 2 * DAY_MS),
            },
        )
        .await;
    let summary: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(
        summary,
        json!({ "customer_id": "c-3", "nudged": true, "win_back": true })
    );
    assert_eq!(
        kit.emails(),
        [
            ("welcome".to_owned(), 0),
            ("nudge".to_owned(), 7),
            ("win_back".to_owned(), 30)
        ]
    );
    let stage: String = kit.env.query(&run, "stage", ()).await.unwrap();
    assert_eq!(stage, "win-back offered");
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}
