"""Each trigger kind replayed with --now over several days: exactly who got which step when."""

from __future__ import annotations

from conftest import customer


def test_event_trigger_sends_each_step_after_its_delay(store_project):
    project = store_project
    project.campaign(
        "thanks",
        """
        type: transactional
        trigger: {event: purchase}
        steps:
          - {template: plain, subject: "Thanks {{ customer.first_name }}", delay: 1h}
          - {template: plain, subject: "How is it going?", delay: 2d}
        """,
    )
    project.customers(customer("ann"), customer("bob"))
    project.events(
        {"id": "e1", "customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z"},
        {"id": "e2", "customer": "bob", "event": "purchase", "at": "2026-03-02T08:00:00Z"},
    )

    assert project.tick("2026-03-01T10:30:00Z")["thanks"] == {"entered": 1}  # bob's purchase is not seen yet
    assert project.sent() == []
    project.tick("2026-03-01T11:00:00Z")
    assert project.sent() == [("ann", 1)]
    project.tick("2026-03-02T09:00:00Z")
    assert project.sent() == [("ann", 1), ("bob", 1)]
    project.tick("2026-03-03T10:59:00Z")  # ann's step 2 is due 2026-03-03T11:00
    assert project.sent() == [("ann", 1), ("bob", 1)]
    project.tick("2026-03-03T11:00:00Z")
    project.tick("2026-03-04T09:00:00Z")
    assert project.sent() == [("ann", 1), ("bob", 1), ("ann", 2), ("bob", 2)]
    subjects = sorted(m["Subject"] for m in project.outbox())
    assert subjects == ["How is it going?", "How is it going?", "Thanks Ann", "Thanks Bob"]


def test_event_where_filters_on_properties(store_project):
    project = store_project
    project.campaign(
        "alert",
        """
        type: transactional
        recipient: support@shop.example
        trigger: {event: feedback_submitted, where: {score: {lte: 6}}}
        steps: [{template: plain, subject: "Low score from {{ customer.first_name }}"}]
        """,
    )
    project.customers(customer("ann"), customer("bob"))
    project.events(
        {"customer": "ann", "event": "feedback_submitted", "at": "2026-03-01T10:00:00Z", "properties": {"score": 3}},
        {"customer": "bob", "event": "feedback_submitted", "at": "2026-03-01T10:00:00Z", "properties": {"score": 9}},
    )
    project.tick("2026-03-01T10:05:00Z")
    assert project.sent() == [("ann", 1)]
    (email,) = project.outbox()
    assert email["To"] == "support@shop.example"
    assert email["Subject"] == "Low score from Ann"


def test_inactivity_trigger_enters_at_threshold_and_ends_when_activity_returns(store_project):
    project = store_project
    project.campaign(
        "nudge",
        """
        topic: news
        trigger: {inactivity: {for: 30d}}
        steps:
          - {template: plain, subject: "We miss you"}
          - {template: plain, subject: "Still there?", delay: 7d}
        reentry: 60d
        """,
    )
    project.customers(
        customer("ann", created_at="2026-01-01T00:00:00Z"),
        customer("bob", created_at="2026-01-01T00:00:00Z"),
        customer("cat", created_at="2026-01-01T00:00:00Z"),
    )
    project.events(
        {"customer": "ann", "event": "login", "at": "2026-01-10T12:00:00Z"},
        {"customer": "bob", "event": "login", "at": "2026-01-20T12:00:00Z"},
    )
    # cat: no event, so signup counts: inactive 30d on 2026-01-31
    project.tick("2026-01-31T00:00:00Z")
    assert project.sent() == [("cat", 1)]
    # ann reaches 30d at 2026-02-09T12:00; cat's step 2 was due 2026-02-07
    project.tick("2026-02-09T12:00:00Z")
    assert project.sent() == [("cat", 1), ("cat", 2), ("ann", 1)]
    # ann comes back before her step 2 (due 2026-02-16T12:00); bob reaches 30d on 2026-02-19T12:00
    project.events({"customer": "ann", "event": "purchase", "at": "2026-02-12T09:00:00Z"})
    project.tick("2026-02-17T00:00:00Z")
    project.tick("2026-02-19T13:00:00Z")
    assert project.sent() == [("cat", 1), ("cat", 2), ("ann", 1), ("bob", 1)]
    assert ("nudge", "ann", 2, "skipped", "exit") in project.sends()
    # ann is inactive again from 2026-03-14, but reentry: 60d keeps her out of a second nudge
    project.tick("2026-03-20T00:00:00Z")
    assert project.sent("nudge").count(("ann", 1)) == 1


def test_date_trigger_reads_a_bare_date_in_the_customers_timezone(store_project):
    project = store_project
    project.campaign(
        "points",
        """
        topic: offers
        trigger: {date: {attribute: points_expire_at, offset: -14d}}
        audience: [{attribute: points, gt: 0}]
        steps: [{template: plain, subject: "{{ customer.points }} points expire soon"}]
        reentry: 30d
        """,
    )
    project.customers(
        customer("riyadh", timezone="Asia/Riyadh", points=120, points_expire_at="2026-06-15"),
        customer("london", timezone="Europe/London", points=50, points_expire_at="2026-06-15"),
        customer("empty", timezone="UTC", points=0, points_expire_at="2026-06-15"),
    )
    # 2026-06-01 00:00 in Riyadh is 2026-05-31T21:00Z; in London (BST) 2026-05-31T23:00Z
    project.tick("2026-05-31T20:59:00Z")
    assert project.sent() == []
    project.tick("2026-05-31T21:00:00Z")
    assert project.sent() == [("riyadh", 1)]
    project.tick("2026-05-31T23:00:00Z")
    assert project.sent() == [("riyadh", 1), ("london", 1)]
    assert [m["Subject"] for m in project.outbox()] == ["120 points expire soon", "50 points expire soon"]


def test_anniversary_date_trigger_fires_every_year(store_project):
    project = store_project
    project.campaign(
        "birthday",
        """
        topic: offers
        trigger: {date: {attribute: birthday, anniversary: true}}
        steps: [{template: plain, subject: "Happy birthday"}]
        """,
    )
    project.customers(customer("ann", birthday="1990-03-05"))
    project.tick("2026-03-04T12:00:00Z")
    project.tick("2026-03-05T00:01:00Z")
    project.tick("2026-03-05T06:00:00Z")
    project.tick("2027-03-05T00:01:00Z")
    assert project.sent() == [("ann", 1), ("ann", 1)]


def test_schedule_trigger_broadcasts_once_per_firing_to_the_audience(store_project):
    project = store_project
    project.campaign(
        "news",
        """
        topic: news
        trigger: {schedule: "0 9 * * MON"}
        audience: [{attribute: plan, in: [pro, business]}]
        steps: [{template: plain, subject: "This week"}]
        """,
    )
    project.customers(
        customer("ann", plan="pro"),
        customer("bob", plan="free"),
        customer("cat", plan="business", topics={"news": False}),
    )
    project.tick("2026-03-02T08:59:00Z")  # a Monday
    assert project.sent() == []
    project.tick("2026-03-02T09:00:00Z")
    project.tick("2026-03-02T09:30:00Z")
    assert project.sent() == [("ann", 1)]
    project.tick("2026-03-09T09:01:00Z")
    assert project.sent() == [("ann", 1), ("ann", 1)]


def test_schedule_at_fires_once(store_project):
    project = store_project
    project.campaign(
        "launch",
        """
        topic: news
        trigger: {at: 2026-03-10T12:00:00Z}
        steps: [{template: plain, subject: "It is here"}]
        """,
    )
    project.customers(customer("ann"), customer("bob"))
    project.tick("2026-03-10T11:00:00Z")
    project.tick("2026-03-10T12:00:00Z")
    project.tick("2026-03-11T12:00:00Z")
    assert sorted(project.sent()) == [("ann", 1), ("bob", 1)]
