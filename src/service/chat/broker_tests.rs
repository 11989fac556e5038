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
            "*** you are alice in #lobby",
            "*** alice joined #lobby",
            "*** bob joined #lobby"
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
    assert_eq!(drain(&b_out), ["*** alice left #lobby (connection closed)"]);
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
            "*** you are bob in #lobby",
            "*** the last 2 messages in #lobby:",
            "<alice> two",
            "<alice> three",
            "*** bob joined #lobby"
        ]
    );
}

#[test]
fn one_message_of_history_is_announced_in_the_singular() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, _) = join(&broker, "alice");
    say(&alice, "only");
    let (_bob, b_out) = join(&broker, "bob");
    assert_eq!(drain(&b_out)[1], "*** the last message in #lobby:");
}

#[test]
fn rooms_who_nick_msg_and_me() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, a_out) = join(&broker, "alice");
    let (bob, b_out) = join(&broker, "bob");
    alice.handle(ClientMessage::Join {
        room: "#Dev".into(),
    });
    assert_eq!(drain(&b_out)[2..], ["*** alice left #lobby"]);
    assert_eq!(
        drain(&a_out)[3..],
        ["*** you are alice in #dev", "*** alice joined #dev"]
    );
    say(&bob, "lobby only");
    assert!(drain(&a_out).is_empty());
    alice.handle(ClientMessage::Rooms);
    assert_eq!(drain(&a_out), ["*** rooms: #dev (1), #lobby (1)"]);
    bob.handle(ClientMessage::Who);
    assert_eq!(drain(&b_out), ["<bob> lobby only", "*** in #lobby: bob"]);
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
        [
            "*** you are robert in #lobby",
            "*** bob is now known as robert"
        ]
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
    assert_eq!(lines[0], "*** you are alice, in no room (/join ROOM)");
    assert_eq!(lines[1], "! you are in no room; /join ROOM first");
    // #dev was emptied and dropped; the default room stays.
    alice.handle(ClientMessage::Rooms);
    assert_eq!(drain(&a_out), ["*** rooms: #lobby (1)"]);
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

#[test]
fn reserved_nicks_are_refused_at_register_and_at_nick() {
    let broker = Broker::new(BrokerConfig::default());
    for nick in ["server", "System", "ADMIN", "sockit", "5erver"] {
        let err = broker
            .register(nick, None, Outbox::new(QueueLimits::default()))
            .expect_err(nick);
        assert_eq!(err.code, "invalid_nick", "{nick}");
        assert!(err.message.contains("reserved"), "{err}");
    }
    let (alice, a_out) = join(&broker, "alice");
    drain(&a_out);
    alice.handle(ClientMessage::Nick {
        nick: "Sockit".into(),
    });
    let lines = drain(&a_out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("! ") && lines[0].contains("reserved"),
        "{lines:?}"
    );
}

#[test]
fn a_notice_cannot_be_forged_by_an_action_or_a_message() {
    let broker = Broker::new(BrokerConfig::default());
    let (carol, c_out) = join(&broker, "carol");
    let (_bob, b_out) = join(&broker, "bob");
    drain(&c_out);
    let real = drain(&b_out);
    assert_eq!(
        real.last().map(String::as_str),
        Some("*** bob joined #lobby")
    );
    carol.handle(ClientMessage::Me {
        text: "joined #lobby".into(),
    });
    say(&carol, "\n*** bob joined #lobby");
    let forged = drain(&b_out);
    assert_eq!(forged.len(), 2, "{forged:?}");
    for line in &forged {
        assert!(
            !line.starts_with(crate::service::chat::NOTICE_PREFIX),
            "{line:?}"
        );
        assert!(!line.starts_with('!'), "{line:?}");
    }
}

#[test]
fn blank_messages_and_a_nick_change_to_the_same_nick_reach_nobody() {
    let broker = Broker::new(BrokerConfig::default());
    let (alice, a_out) = join(&broker, "alice");
    let (_bob, b_out) = join(&broker, "bob");
    drain(&a_out);
    drain(&b_out);
    for blank in ["   ", "\t", " \u{200b} ", "\u{feff}"] {
        say(&alice, blank);
        alice.handle(ClientMessage::Me { text: blank.into() });
        alice.handle(ClientMessage::Msg {
            to: "bob".into(),
            text: blank.into(),
        });
    }
    alice.handle(ClientMessage::Nick {
        nick: "alice".into(),
    });
    assert!(drain(&b_out).is_empty());
    assert_eq!(drain(&a_out), ["*** you are already alice"]);
    // A change of case is a change, and is told.
    alice.handle(ClientMessage::Nick {
        nick: "Alice".into(),
    });
    assert_eq!(drain(&b_out), ["*** alice is now known as Alice"]);
}

#[test]
fn history_is_bounded_in_bytes_and_released_when_its_room_empties() {
    let broker = Broker::new(BrokerConfig {
        history: 1000,
        history_bytes: 64 * 1024,
        ..BrokerConfig::default()
    });
    let big = "x".repeat(MAX_MESSAGE_BYTES);
    let (alice, _) = join(&broker, "alice");
    alice.handle(ClientMessage::Join { room: "dev".into() });
    for _ in 0..100 {
        say(&alice, &big);
    }
    let kept = broker.history_bytes();
    assert!(kept <= 64 * 1024 && kept > 32 * 1024, "{kept}");
    let (bob, b_out) = join(&broker, "bob");
    bob.handle(ClientMessage::Join { room: "dev".into() });
    let replayed = drain(&b_out)
        .iter()
        .filter(|l| l.starts_with("<alice>"))
        .count();
    assert_eq!(replayed, 64 * 1024 / (3 * MAX_MESSAGE_BYTES + 64), "{kept}");
    drop(bob);
    drop(alice);
    assert_eq!(broker.history_bytes(), 0, "an empty room keeps nothing");

    // The default room stays, but its history goes with its last member.
    let (carol, _) = join(&broker, "carol");
    say(&carol, "kept while carol is here");
    assert!(broker.history_bytes() > 0);
    drop(carol);
    assert_eq!(broker.history_bytes(), 0);
}
