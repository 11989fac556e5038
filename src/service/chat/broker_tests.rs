//! The broker driven directly: outboxes stand in for connections.

use super::*;
use crate::service::chat::outbox::QueueLimits;
use crate::service::chat::MAX_MESSAGE_BYTES;

fn join(broker: &Arc<Broker>, nick: &str) -> (Member, Arc<Outbox>) {
    let outbox = Outbox::new(QueueLimits::default());
    let member = broker
        .register(nick, None, outbox.clone())
        .unwrap_or_else(|e| panic!("{nick}: {e}"));
    (member, outbox)
}

/// Everything queued for `outbox`, as lines.
fn drain(outbox: &Outbox) -> Vec<String> {
    let batch = outbox.take_queued();
    batch.iter().map(|d| d.message().to_line()).collect()
}

fn say(member: &Member, text: &str) {
    member.handle(ClientMessage::Say { text: text.into() });
}

#[test]
fn a_message_reaches_everyone_in_the_room_once_formatted() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, a_out) = join(&broker, "alice");
    let (_bob, b_out) = join(&broker, "bob");
    assert_eq!(
        drain(&a_out),
        [
            "* you are alice in #lobby",
            "* alice joined #lobby",
            "* bob joined #lobby"
        ]
    );
    drain(&b_out);
    say(&alice, "hi");
    assert_eq!(drain(&a_out), ["<alice> hi"]);
    assert_eq!(drain(&b_out), ["<alice> hi"]);
}

#[test]
fn nicks_are_unique_across_case_and_look_alikes_with_a_free_suggestion() {
    let broker = Broker::new(BrokerConfig::default());
    let (_alice, _) = join(&broker, "alice");
    let (_alice2, _) = join(&broker, "alice_2");
    for nick in ["Alice", "ALICE", "A1ice"] {
        let err = broker
            .register(nick, None, Outbox::new(QueueLimits::default()))
            .expect_err(nick);
        assert_eq!(err.code, "nick_taken");
        assert!(
            err.message.contains("try alice_3") || err.message.contains("_3"),
            "{err}"
        );
    }
    let err = broker
        .register("a\x1bb", None, Outbox::new(QueueLimits::default()))
        .expect_err("control character");
    assert_eq!(err.code, "invalid_nick");
    let err = broker
        .register(&"x".repeat(1000), None, Outbox::new(QueueLimits::default()))
        .expect_err("too long");
    assert_eq!(err.code, "invalid_nick");
}

#[test]
fn a_dropped_member_frees_its_nick_and_tells_the_room() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, _) = join(&broker, "alice");
    let (_bob, b_out) = join(&broker, "bob");
    drain(&b_out);
    drop(alice);
    assert_eq!(drain(&b_out), ["* alice left #lobby (connection closed)"]);
    assert_eq!(broker.client_count(), 1);
    let (_again, _) = join(&broker, "ALICE");
}

#[test]
fn history_is_bounded_and_replayed_on_join() {
    let broker = Broker::new(BrokerConfig {
        history: 2,
        ..BrokerConfig::default()
    });
    let (alice, _) = join(&broker, "alice");
    for text in ["one", "two", "three"] {
        say(&alice, text);
    }
    let (_bob, b_out) = join(&broker, "bob");
    assert_eq!(
        drain(&b_out),
        [
            "* you are bob in #lobby",
            "* the last 2 messages in #lobby:",
            "<alice> two",
            "<alice> three",
            "* bob joined #lobby"
        ]
    );
}

#[test]
fn one_message_of_history_is_announced_in_the_singular() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, _) = join(&broker, "alice");
    say(&alice, "only");
    let (_bob, b_out) = join(&broker, "bob");
    assert_eq!(drain(&b_out)[1], "* the last message in #lobby:");
}

#[test]
fn rooms_who_nick_msg_and_me() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, a_out) = join(&broker, "alice");
    let (bob, b_out) = join(&broker, "bob");
    alice.handle(ClientMessage::Join {
        room: "#Dev".into(),
    });
    assert_eq!(drain(&b_out)[2..], ["* alice left #lobby"]);
    assert_eq!(
        drain(&a_out)[3..],
        ["* you are alice in #dev", "* alice joined #dev"]
    );
    say(&bob, "lobby only");
    assert!(drain(&a_out).is_empty());
    alice.handle(ClientMessage::Rooms);
    assert_eq!(drain(&a_out), ["* rooms: #dev (1), #lobby (1)"]);
    bob.handle(ClientMessage::Who);
    assert_eq!(drain(&b_out), ["<bob> lobby only", "* in #lobby: bob"]);
    alice.handle(ClientMessage::Msg {
        to: "BOB".into(),
        text: "psst".into(),
    });
    assert_eq!(drain(&b_out), ["*alice -> bob* psst"]);
    assert_eq!(drain(&a_out), ["*alice -> bob* psst"]);
    bob.handle(ClientMessage::Nick {
        nick: "robert".into(),
    });
    assert_eq!(
        drain(&b_out),
        ["* you are robert in #lobby", "* bob is now known as robert"]
    );
    alice.handle(ClientMessage::Nick {
        nick: "r0bert".into(),
    });
    assert!(drain(&a_out)[0].starts_with("! nick r0bert is taken (too close to robert)"));
    bob.handle(ClientMessage::Me {
        text: "waves".into(),
    });
    assert_eq!(drain(&b_out), ["* robert waves"]);
    alice.handle(ClientMessage::Leave);
    say(&alice, "anyone?");
    let lines = drain(&a_out);
    assert_eq!(lines[0], "* you are alice, in no room (/join ROOM)");
    assert_eq!(lines[1], "! you are in no room; /join ROOM first");
    // #dev was emptied and dropped; the default room stays.
    alice.handle(ClientMessage::Rooms);
    assert_eq!(drain(&a_out), ["* rooms: #lobby (1)"]);
}

#[test]
fn hostile_text_is_neutralised_and_long_text_refused() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, a_out) = join(&broker, "alice");
    drain(&a_out);
    say(&alice, "x\x1b]52;c;aGk=\x07y\x1b[2J\u{202e}z\r\n");
    assert_eq!(
        drain(&a_out),
        ["<alice> x\\x1b]52;c;aGk=\\x07y\\x1b[2J\\u{202e}z\\x0d\\x0a"]
    );
    say(&alice, &"a".repeat(MAX_MESSAGE_BYTES + 1));
    let lines = drain(&a_out);
    assert!(
        lines[0].starts_with("! a message has at most 4096 bytes"),
        "{lines:?}"
    );
}

#[test]
fn a_slow_member_overflows_alone() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, a_out) = join(&broker, "alice");
    let slow_box = Outbox::new(QueueLimits {
        messages: 10,
        bytes: 1 << 20,
    });
    let _slow = broker.register("slow", None, slow_box.clone());
    for i in 0..20 {
        say(&alice, &format!("m{i}"));
        drain(&a_out);
    }
    assert!(slow_box.overflowed());
    assert!(slow_box.is_empty());
    assert!(!a_out.overflowed());
}
