//! `changes[].previous` through the real proxy, in-process, in forward and reverse mode: the
//! value a resource had, known from the proxy's own earlier changes or from an earlier read
//! of the resource.

mod support;

use serde_json::{Value, json};
use support::body_text;
use support::checks::Checks;
use support::clients::Mode;
use support::fake_vendor::{Resource, SimpleResponse};
use support::fixtures::{
    ACCOUNT, APP, CHANNEL, CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, SLACK_GET, SLACK_REMOVE, SLACK_SET, USER, enc,
};
use support::in_process::ProxySettings;
use support::modes::{
    BEARER, Env, ExpectedChange, FORM, NEW_USER, SLACK_CHANNEL, app_retention_path, channel_expiration_path,
    check_intact, check_previous, retention_path, seed_app_instance, seed_channel, seed_user, user_expiration_path,
};

async fn previous_from_own_changes(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} previous from the proxy's own changes"));
    let acct = retention_path(ACCOUNT);
    let other_channel = format!("{APP}/channel/ch-0100");

    let steps: Vec<(&str, SimpleResponse, Vec<ExpectedChange<'_>>)> = vec![
        (
            "first PutRetentionSettings",
            env.aws(
                "PUT",
                CHIME_HOST,
                &acct,
                None,
                r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}"#,
            )
            .await,
            vec![
                ("chime.room_retention", ACCOUNT, Value::Null, json!(365)),
                ("chime.conversation_retention", ACCOUNT, Value::Null, json!(180)),
            ],
        ),
        (
            "second PutRetentionSettings",
            env.aws(
                "PUT",
                CHIME_HOST,
                &acct,
                None,
                r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 400}}}"#,
            )
            .await,
            vec![
                ("chime.room_retention", ACCOUNT, json!(365), json!(400)),
                ("chime.conversation_retention", ACCOUNT, json!(180), json!("off")),
            ],
        ),
        (
            "third PutRetentionSettings (turn off)",
            env.aws("PUT", CHIME_HOST, &acct, None, r#"{"RetentionSettings": {}}"#)
                .await,
            vec![
                ("chime.room_retention", ACCOUNT, json!(400), json!("off")),
                ("chime.conversation_retention", ACCOUNT, json!("off"), json!("off")),
            ],
        ),
        (
            "first PutChannelExpirationSettings",
            env.aws(
                "PUT",
                MESSAGING_HOST,
                &channel_expiration_path(&other_channel),
                Some(BEARER),
                r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            )
            .await,
            vec![("chime_sdk.channel_expiration", other_channel.as_str(), Value::Null, json!(30))],
        ),
        (
            "PutChannelExpirationSettings removal",
            env.aws(
                "PUT",
                MESSAGING_HOST,
                &channel_expiration_path(&other_channel),
                Some(BEARER),
                "{}",
            )
            .await,
            vec![("chime_sdk.channel_expiration", other_channel.as_str(), json!(30), json!("off"))],
        ),
        (
            "CreateChannel with ExpirationSettings",
            env.aws(
                "POST",
                MESSAGING_HOST,
                "/channels",
                Some(BEARER),
                &format!(
                    r#"{{"AppInstanceArn": "{APP}", "Name": "n", "ClientRequestToken": "tok-0001", "ExpirationSettings": {{"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}}}"#
                ),
            )
            .await,
            vec![("chime_sdk.channel_expiration", CHANNEL, Value::Null, json!(7))],
        ),
        (
            "PutChannelExpirationSettings on the created channel",
            env.aws(
                "PUT",
                MESSAGING_HOST,
                &channel_expiration_path(CHANNEL),
                Some(BEARER),
                r#"{"ExpirationSettings": {"ExpirationDays": 14, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}"#,
            )
            .await,
            vec![("chime_sdk.channel_expiration", CHANNEL, json!(7), json!(14))],
        ),
        (
            "first PutAppInstanceRetentionSettings",
            env.aws(
                "PUT",
                IDENTITY_HOST,
                &app_retention_path(APP),
                None,
                r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}}"#,
            )
            .await,
            vec![("chime_sdk.app_instance_retention", APP, Value::Null, json!(90))],
        ),
        (
            "second PutAppInstanceRetentionSettings (off)",
            env.aws(
                "PUT",
                IDENTITY_HOST,
                &app_retention_path(APP),
                None,
                r#"{"AppInstanceRetentionSettings": {}}"#,
            )
            .await,
            vec![("chime_sdk.app_instance_retention", APP, json!(90), json!("off"))],
        ),
        (
            "CreateAppInstanceUser with ExpirationSettings",
            env.aws(
                "POST",
                IDENTITY_HOST,
                "/app-instance-users",
                None,
                &format!(
                    r#"{{"AppInstanceArn": "{APP}", "AppInstanceUserId": "user-2", "Name": "User Two", "ClientRequestToken": "tok-0002", "ExpirationSettings": {{"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}}}}"#
                ),
            )
            .await,
            vec![("chime_sdk.user_expiration", NEW_USER, Value::Null, json!(365))],
        ),
        (
            "PutAppInstanceUserExpirationSettings on the created user",
            env.aws(
                "PUT",
                IDENTITY_HOST,
                &user_expiration_path(NEW_USER),
                None,
                r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            )
            .await,
            vec![("chime_sdk.user_expiration", NEW_USER, json!(365), json!(30))],
        ),
        (
            "first setCustomRetention",
            env.slack("POST", SLACK_SET, Some(FORM), "channel_id=C0123456789&duration_days=365")
                .await,
            vec![("slack.channel_retention", SLACK_CHANNEL, Value::Null, json!(365))],
        ),
        (
            "removeCustomRetention",
            env.slack("POST", SLACK_REMOVE, Some(FORM), "channel_id=C0123456789")
                .await,
            vec![("slack.channel_retention", SLACK_CHANNEL, json!(365), json!("default"))],
        ),
        (
            "setCustomRetention after removal (JSON body)",
            env.slack(
                "POST",
                SLACK_SET,
                Some("application/json"),
                r#"{"channel_id": "C0123456789", "duration_days": 30}"#,
            )
            .await,
            vec![("slack.channel_retention", SLACK_CHANNEL, json!("default"), json!(30))],
        ),
    ];
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), steps.len());
    for (i, (what, resp, expected)) in steps.iter().enumerate() {
        c.ok(
            &format!("{what}: client status"),
            (200..300).contains(&resp.status) && resp.json().get("ok") != Some(&json!(false)),
            format!("{} {}", resp.status, body_text(resp)),
        );
        match log.events.get(i) {
            Some(ev) => {
                c.eq(&format!("{what}: outcome"), &ev["outcome"], &json!("forwarded"));
                check_previous(&mut c, what, ev, expected);
            }
            None => c.fail(what, "no event"),
        }
    }
    c.finish();
}

async fn previous_from_reads(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} previous from reads"));
    let f = &env.fake;
    f.set_state(
        Resource::ChimeAccount(ACCOUNT.into()),
        json!({"RoomRetentionSettings": {"RetentionDays": 30}}),
    );
    seed_channel(f);
    seed_app_instance(f);
    seed_user(f);
    f.set_state(Resource::SlackChannel(SLACK_CHANNEL.into()), json!(400));

    let acct = retention_path(ACCOUNT);
    let mut pairs: Vec<(&str, SimpleResponse, SimpleResponse, Vec<ExpectedChange<'_>>)> = Vec::new();
    pairs.push((
        "GetRetentionSettings then PutRetentionSettings",
        env.aws("GET", CHIME_HOST, &acct, None, "").await,
        env.aws(
            "PUT",
            CHIME_HOST,
            &acct,
            None,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 60}, "ConversationRetentionSettings": {"RetentionDays": 60}}}"#,
        )
        .await,
        vec![
            ("chime.room_retention", ACCOUNT, json!(30), json!(60)),
            ("chime.conversation_retention", ACCOUNT, json!("off"), json!(60)),
        ],
    ));
    pairs.push((
        "DescribeChannel then PutChannelExpirationSettings",
        env.aws(
            "GET",
            MESSAGING_HOST,
            &format!("/channels/{}", enc(CHANNEL)),
            Some(BEARER),
            "",
        )
        .await,
        env.aws(
            "PUT",
            MESSAGING_HOST,
            &channel_expiration_path(CHANNEL),
            Some(BEARER),
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
        )
        .await,
        vec![("chime_sdk.channel_expiration", CHANNEL, json!(7), json!(30))],
    ));
    pairs.push((
        "GetAppInstanceRetentionSettings then PutAppInstanceRetentionSettings",
        env.aws("GET", IDENTITY_HOST, &app_retention_path(APP), None, "").await,
        env.aws(
            "PUT",
            IDENTITY_HOST,
            &app_retention_path(APP),
            None,
            r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 120}}}"#,
        )
        .await,
        vec![("chime_sdk.app_instance_retention", APP, json!(90), json!(120))],
    ));
    pairs.push((
        "DescribeAppInstanceUser then PutAppInstanceUserExpirationSettings",
        env.aws(
            "GET",
            IDENTITY_HOST,
            &format!("/app-instance-users/{}", enc(USER)),
            None,
            "",
        )
        .await,
        env.aws(
            "PUT",
            IDENTITY_HOST,
            &user_expiration_path(USER),
            None,
            r#"{"ExpirationSettings": {"ExpirationDays": 100, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
        )
        .await,
        vec![("chime_sdk.user_expiration", USER, json!(365), json!(100))],
    ));
    pairs.push((
        "getCustomRetention then setCustomRetention",
        env.slack("POST", SLACK_GET, Some(FORM), "channel_id=C0123456789").await,
        env.slack(
            "POST",
            SLACK_SET,
            Some(FORM),
            "channel_id=C0123456789&duration_days=500",
        )
        .await,
        vec![("slack.channel_retention", SLACK_CHANNEL, json!(400), json!(500))],
    ));
    pairs.push((
        "getCustomRetention (no custom policy) then setCustomRetention",
        env.slack("POST", SLACK_GET, Some(FORM), "channel_id=C0999999999").await,
        env.slack("POST", SLACK_SET, Some(FORM), "channel_id=C0999999999&duration_days=90")
            .await,
        vec![("slack.channel_retention", "C0999999999", json!("default"), json!(90))],
    ));
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), pairs.len() * 2);
    for (i, (what, read, change, expected)) in pairs.iter().enumerate() {
        c.eq(&format!("{what}: read status"), read.status, 200);
        c.eq(&format!("{what}: change status"), change.status, 200);
        match (log.events.get(2 * i), log.events.get(2 * i + 1)) {
            (Some(r), Some(ev)) => {
                c.eq(&format!("{what}: read outcome"), &r["outcome"], &json!("forwarded"));
                c.eq(&format!("{what}: read readOnly"), &r["readOnly"], &json!(true));
                check_previous(&mut c, what, ev, expected);
            }
            _ => c.fail(what, "events missing"),
        }
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_previous_from_own_changes() {
    previous_from_own_changes(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_previous_from_own_changes() {
    previous_from_own_changes(Mode::Reverse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_previous_from_reads() {
    previous_from_reads(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_previous_from_reads() {
    previous_from_reads(Mode::Reverse).await;
}
