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
    # Exact identifiers and rare words, which a user types into a search box verbatim.
    ("order", "user", "My order ORD-48213 arrived with a cracked screen, I want a replacement."),
    ("email_change", "user", "Please change the account email to jane.doe@acme-corp.com before Friday."),
    ("sku", "user", "Is the XJ-9000 blender still under warranty? The code on the box is SKU 7730-BX."),
    ("parcel", "assistant", "Your parcel 1Z999AA10123456784 is with UPS and should arrive on Tuesday."),
    ("allergy", "user", "I'm allergic to penicillin and amoxicillin, which antibiotic would be safe?"),
    ("kubernetes", "user", "Our kubelet keeps evicting pods with an OOMKilled status on the staging cluster."),
    ("story", "user", "Write a bedtime story about a quokka who learns to swim."),
    ("invoice_no", "assistant", "Invoice INV-2024-0117 for 149.00 EUR was sent to billing@northwind.io."),
]

# ... and their twins: the same words around another identifier, as in the history of a user with
# many orders, parcels and invoices. Embeddings barely tell them apart; exact words do.
TWINS: dict[str, tuple[str, list[str]]] = {
    "order": ("ORD-48213", ["ORD-51877", "ORD-48291", "ORD-40213", "ORD-48731"]),
    "email_change": ("jane.doe@acme-corp.com", ["john.smith@acme-corp.com", "jane.roe@acme-corp.com", "j.doe@acme.com"]),
    "sku": ("XJ-9000", ["XJ-7000", "XJ-9100", "XK-9000"]),
    "parcel": ("1Z999AA10123456784", ["1Z999AA10987654321", "1Z999AA10123456999", "1Z888AA10123456784"]),
    "invoice_no": ("INV-2024-0117", ["INV-2024-0093", "INV-2024-0118", "INV-2023-0117"]),
    "allergy": ("penicillin and amoxicillin", ["ibuprofen and aspirin", "sulfa drugs and codeine"]),
    "kubernetes": ("kubelet keeps evicting pods with an OOMKilled", ["scheduler keeps restarting pods with a CrashLoopBackOff"]),
    "story": ("quokka who learns to swim", ["koala who learns to climb", "wombat who learns to dig"]),
}
STORED += [
    (f"{key}_twin{i}", role, text.replace(original, twin))
    for key, role, text in list(STORED)
    if key in TWINS
    for original, twins in [TWINS[key]]
    for i, twin in enumerate(twins)
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

# Identifiers and rare words typed verbatim (or nearly): what static embeddings miss.
IDENTIFIER_QUERIES: list[tuple[str, str]] = [
    ("ORD-48213", "order"),
    ("order 48213", "order"),
    ("jane.doe@acme-corp.com", "email_change"),
    ("XJ-9000", "sku"),
    ("7730-BX", "sku"),
    ("1Z999AA10123456784", "parcel"),
    ("INV-2024-0117", "invoice_no"),
    ("billing@northwind.io", "invoice_no"),
    ("amoxicillin", "allergy"),
    ("OOMKilled", "kubernetes"),
    ("kubelet evicting", "kubernetes"),
    ("quokka", "story"),
    ("status of ORD-48213", "order"),  # a word the message lacks: lexical (every word) misses it
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


def hit_rate(indexer: Indexer, queries: list[tuple[str, str]] = QUERIES, mode: str = "hybrid", top: int = 3) -> tuple[float, list[str]]:
    misses = []
    for query, key in queries:
        results = indexer.search(account_id=ACCOUNT, end_user_id=USER, thread_id=None, q=query, limit=top, mode=mode)
        if f"thr_{key}" not in [r["thread_id"] for r in results]:
            misses.append(f"{query!r} -> {[r['thread_id'] for r in results]}")
    return 1 - len(misses) / len(queries), misses


@pytest.fixture(scope="module")
def indexer(tmp_path_factory: pytest.TempPathFactory) -> Indexer:
    idx = LocalVectorIndex(tmp_path_factory.mktemp("rel"), dimensions=256)
    ix = Indexer(load_local_embedder(), idx)
    assert ix.index_messages(stored_messages()) == len(STORED)
    return ix


def test_paraphrased_queries_find_the_right_message_in_the_top_3(indexer: Indexer) -> None:
    for mode in ("semantic", "hybrid"):
        rate, misses = hit_rate(indexer, mode=mode)
        print(f"\nlocal {mode} hit rate @3 on paraphrases: {rate:.0%} ({len(QUERIES) - len(misses)}/{len(QUERIES)})")
        for miss in misses:
            print("  miss:", miss)
        assert rate >= 0.7, misses


def test_identifiers_and_rare_words_are_found_by_lexical_and_hybrid_search(indexer: Indexer) -> None:
    rates = {mode: hit_rate(indexer, IDENTIFIER_QUERIES, mode) for mode in ("semantic", "lexical", "hybrid")}
    print("\nlocal hit rate @3 on identifiers:", {mode: f"{rate:.0%}" for mode, (rate, _) in rates.items()})
    assert rates["lexical"][0] >= 0.9, rates["lexical"][1]
    assert rates["hybrid"][0] >= 0.9, rates["hybrid"][1]
    assert rates["hybrid"][0] > max(rates["semantic"][0], rates["lexical"][0])  # better than either alone


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
