//! The order saga in virtual time: the happy path, cancels at two points,
//! a declined card, a flaky warehouse, an invalid order. Every run replays.

use order_fulfilment::{Config, Services, activities};
use serde_json::{Value, json};
use weft::RunStatus;
use weft::model::RunId;
use weft::testing::{TestEnv, guest_wasm};

struct Kit {
    env: TestEnv,
    services: Services,
    module: weft::model::Sha256Hex,
}

impl Kit {
    async fn new(config: Config, replay_every_activation: bool) -> Kit {
        let services = Services::new(config);
        let mut builder = TestEnv::builder(activities(&services));
        if replay_every_activation {
            builder = builder.replay_every_activation();
        }
        let env = builder.build().await.unwrap();
        let module = env
            .deploy("orders", &guest_wasm("order-fulfilment-workflow").unwrap())
            .await
            .unwrap();
        Kit {
            env,
            services,
            module,
        }
    }

    async fn order(&self, id: &str, items: Value) -> RunId {
        let input =
            json!({ "order_id": id, "customer": "ada", "items": items, "amount_cents": 4999 });
        self.env
            .start(&self.module, "fulfil_order", id, input)
            .await
            .unwrap()
    }

    /// The journal's activity names, in order.
    fn steps(&self) -> Vec<String> {
        self.services
            .journal()
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    }
}

fn kettle() -> Value {
    json!([{ "sku": "KETTLE", "qty": 1 }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_fulfilled_step_by_step() {
    let kit = Kit::new(Config::default(), false).await;
    let run = kit.order("o1", kettle()).await;
    let tracking: String = kit.env.output(&run).await.unwrap();
    assert_eq!(tracking, "1ZO1");
    assert_eq!(
        kit.steps(),
        [
            "validate_order",
            "reserve_inventory",
            "charge_payment",
            "create_shipment",
            "notify_warehouse",
            "confirm_order"
        ]
    );
    let status: String = kit.env.query(&run, "status", ()).await.unwrap();
    assert_eq!(status, "confirmed");
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_reservation_releases_only_the_stock() {
    // The inventory service is down twice: the run waits on a retry when the cancel comes.
    let config = Config {
        inventory_outages: 2,
        ..Config::default()
    };
    let kit = Kit::new(config, true).await;
    let run = kit.order("o2", kettle()).await;
    let status: String = kit.env.query(&run, "status", ()).await.unwrap();
    assert_eq!(status, "reserve_inventory");
    kit.env
        .cancel(&run, "the customer changed their mind")
        .await
        .unwrap();
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Cancelled, "{record:?}");
    assert_eq!(
        kit.steps(),
        ["validate_order", "reserve_inventory", "release_inventory"]
    );
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_charge_refunds_then_releases() {
    let config = Config {
        gateway_timeouts: 1,
        ..Config::default()
    };
    let kit = Kit::new(config, false).await;
    let run = kit.order("o3", kettle()).await;
    kit.env.cancel(&run, "fraud team hold").await.unwrap();
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(record.failure.unwrap().message, "fraud team hold");
    assert_eq!(
        kit.steps(),
        [
            "validate_order",
            "reserve_inventory",
            "charge_payment",
            "refund_payment",
            "release_inventory"
        ],
        "compensations run in reverse order"
    );
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_not_retried_and_releases_the_stock() {
    let config = Config {
        card_declined: true,
        ..Config::default()
    };
    let kit = Kit::new(config, false).await;
    let run = kit.order("o4", kettle()).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.failure.unwrap().error_type, "CardDeclined");
    assert_eq!(
        kit.services.count("charge_payment"),
        1,
        "declines are not retried"
    );
    assert_eq!(
        kit.steps(),
        [
            "validate_order",
            "reserve_inventory",
            "charge_payment",
            "release_inventory"
        ]
    );
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_warehouse_is_retried_until_it_takes_the_notice() {
    let config = Config {
        warehouse_failures: 3,
        ..Config::default()
    };
    let kit = Kit::new(config, false).await;
    let start = kit.env.now_ms();
    let run = kit.order("o5", kettle()).await;
    let _: String = kit.env.output(&run).await.unwrap();
    assert_eq!(kit.services.count("notify_warehouse"), 1);
    // Retries after 1, 2 and 4 minutes of virtual time.
    assert_eq!(kit.env.now_ms() - start, 7 * 60_000);
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_order_fails_with_nothing_to_compensate() {
    let kit = Kit::new(Config::default(), false).await;
    let run = kit.order("o6", json!([])).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.failure.unwrap().error_type, "InvalidOrder");
    assert!(kit.services.journal().is_empty());
    kit.env.shutdown().await;
}
