"""Relevance of the bundled offline embedder on a small labelled set.

Queries are phrased differently from the stored text ("money back" vs "refund"), as a user
searching their history would. The bench (bench/search_bench.py) reuses this set to compare
embedding models.
"""

from __future__ import annotations

import pytest

from threadgate.domain.models import Message
from threadgate.search.embedders import load_local_embedder
from threadgate.search.indexing import Indexer
from threadgate.search.local_index import LocalVectorIndex

# (key, role, text): one end user's past conversations.
STORED: list[tuple[str, str, str]] = [
    ("refund", "user", "I was charged twice for my annual plan. Can I get a refund for the second payment?"),
    ("refund_answer", "assistant", "I've asked billing to reverse the duplicate charge; the refund should reach your card in 5-7 business days."),
    ("password", "user", "I can't log in anymore, it keeps saying my password is wrong even after I reset it."),
    ("shipping", "user", "My package still hasn't arrived, the tracking number shows it stuck in Memphis since Monday."),
    ("cancel", "user", "Please cancel my subscription at the end of this billing cycle, I won't need it after June."),
    ("recipe", "user", "What can I cook tonight with chicken thighs, lemons and a bag of spinach?"),
    ("recipe_answer", "assistant", "Try lemon-garlic chicken thighs seared in a skillet, then wilt the spinach in the pan juices."),
    ("vacation", "user", "I'm planning a trip to Portugal in September, which cities should I visit for a week?"),
    ("vacation_answer", "assistant", "For a week in Portugal, split your time between Lisbon, Sintra for a day trip, and Porto."),
    ("python_bug", "user", "My Python script crashes with KeyError when the JSON file is missing the 'user' field."),
    ("python_answer", "assistant", "Use dict.get('user') with a default, or check `'user' in data` before reading the field."),
    ("dog", "user", "My puppy keeps chewing the furniture while I'm at work, how do I stop it?"),
    ("sleep", "user", "I have been waking up at 3am every night and can't fall back asleep."),
    ("salary", "user", "How should I negotiate a higher salary for the new job offer I received?"),
    ("car", "user", "The check engine light came on in my Honda after I filled up the gas tank."),
    ("garden", "user", "The leaves on my tomato plants are turning yellow and curling at the edges."),
    ("invoice", "user", "Can you send me a PDF invoice with our company VAT number for last month?"),
    ("workout", "user", "Give me a 20 minute workout I can do at home without any equipment."),
    ("wedding", "user", "Help me write a short toast for my sister's wedding, she loves hiking."),
    ("laptop", "user", "My laptop battery drains from full to empty in about an hour, is it dying?"),
    ("tax", "user", "Do I need to file taxes in both states if I moved from Ohio to Texas mid-year?"),
    ("mortgage", "user", "Is it better to pick a 15-year or a 30-year fixed rate home loan?"),
]

# (query, key of the message that should be found)
QUERIES: list[tuple[str, str]] = [
    ("money back", "refund"),
    ("double billing reimbursement", "refund"),
    ("sign in problem credentials", "password"),
    ("where is my delivery", "shipping"),
    ("stop my membership", "cancel"),
    ("dinner ideas poultry", "recipe"),
    ("holiday travel itinerary Lisbon", "vacation"),
    ("exception reading dictionary key", "python_bug"),
    ("dog destroying the couch", "dog"),
    ("insomnia in the middle of the night", "sleep"),
    ("pay raise negotiation", "salary"),
    ("vehicle warning light", "car"),
    ("bill with tax id", "invoice"),
    ("exercise routine no gym", "workout"),
    ("speech for a marriage", "wedding"),
    ("notebook computer power problem", "laptop"),
    ("income tax after relocating", "tax"),
    ("house loan term", "mortgage"),
]

ACCOUNT, USER = "acct_rel", "user_rel"


def stored_messages() -> list[Message]:
    return [
        Message(
            thread_id=f"thr_{key}",
            seq=1,
            role=role,  # type: ignore[arg-type]
            content=text,
            kind=role,  # type: ignore[arg-type]
            model=None,
            request_id=None,
            created_at=1_700_000_000_000 + i,
            account_id=ACCOUNT,
            end_user_id=USER,
        )
        for i, (key, role, text) in enumerate(STORED)
    ]


def hit_rate(indexer: Indexer, top: int = 3) -> tuple[float, list[str]]:
    misses = []
    for query, key in QUERIES:
        results = indexer.search(account_id=ACCOUNT, end_user_id=USER, thread_id=None, q=query, limit=top)
        if f"thr_{key}" not in [r["thread_id"] for r in results]:
            misses.append(f"{query!r} -> {[r['thread_id'] for r in results]}")
    return 1 - len(misses) / len(QUERIES), misses


@pytest.fixture(scope="module")
def indexer(tmp_path_factory: pytest.TempPathFactory) -> Indexer:
    idx = LocalVectorIndex(tmp_path_factory.mktemp("rel"), dimensions=256)
    ix = Indexer(load_local_embedder(), idx)
    assert ix.index_messages(stored_messages()) == len(STORED)
    return ix


def test_paraphrased_queries_find_the_right_message_in_the_top_3(indexer: Indexer) -> None:
    rate, misses = hit_rate(indexer)
    print(f"\nlocal embedder hit rate @3: {rate:.0%} ({len(QUERIES) - len(misses)}/{len(QUERIES)})")
    for miss in misses:
        print("  miss:", miss)
    assert rate >= 0.7, misses


def test_the_tutorial_refund_question_finds_the_refund_message_first(indexer: Indexer) -> None:
    results = indexer.search(
        account_id=ACCOUNT,
        end_user_id=USER,
        thread_id=None,
        q="What did we discuss about refunds last week?",
        limit=5,
    )
    assert results[0]["thread_id"] in {"thr_refund", "thr_refund_answer"}
    assert "refund" in results[0]["snippet"]
