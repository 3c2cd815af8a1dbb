/* SPDX-License-Identifier: MIT */
/*
 * The page format of guest/abi.h, on the host: what the guest writes
 * (lsg_page_fill) is what the checkers accept (lsg_page_valid), and any
 * change of a word, a torn write or a page of another index is rejected.
 * Known-answer values pin the format, so that snapshots taken with one
 * build stay checkable by another.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "abi.h"

#define WORDS (LSG_PAGE_SIZE / 8)

static _Alignas(4096) uint64_t page[WORDS];
static _Alignas(4096) uint64_t other[WORDS];

static void test_known_answers(void **state)
{
	(void)state;
	/* lsg_mix is MurmurHash3's fmix64 finalizer */
	assert_int_equal(lsg_mix(0), 0);
	assert_true(lsg_mix(1) == 0xb456bcfc34c2cb2cull);
	assert_true(lsg_mix(0x0123456789abcdefull) == 0x87cbfbfe89022ceaull);
	assert_int_equal(lsg_page_check(7, 3, 2), 0xc1d8943au);
	assert_true(lsg_body_word(7, 3, 4) == 0x4336f76f33ae6031ull);
	assert_true(lsg_body_word(7, 3, 511) == 0x9b1509ce4c321dc8ull);
}

static void test_fill_layout(void **state)
{
	const struct lsg_page_hdr *h = (const struct lsg_page_hdr *)page;

	(void)state;
	assert_int_equal(sizeof(struct lsg_page_hdr), 32);
	lsg_page_fill(page, 7, 3, 2);
	assert_true(h->magic == LSG_PAGE_MAGIC);
	assert_int_equal(h->index, 7);
	assert_int_equal(h->generation, 3);
	assert_int_equal(h->cpu, 2);
	assert_int_equal(h->check, lsg_page_check(7, 3, 2));
	for (uint64_t w = 4; w < WORDS; w++)
		assert_true(page[w] == lsg_body_word(7, 3, w));
}

static void test_zero_page_is_valid(void **state)
{
	(void)state;
	memset(page, 0, sizeof(page));
	assert_true(lsg_page_valid(page, 0));
	assert_true(lsg_page_valid(page, 123456));
}

static void test_filled_page_is_valid_for_its_index_only(void **state)
{
	(void)state;
	lsg_page_fill(page, 4242, 17, 5);
	assert_true(lsg_page_valid(page, 4242));
	assert_false(lsg_page_valid(page, 4241));
	assert_false(lsg_page_valid(page, 4243));
	assert_false(lsg_page_valid(page, 0));
}

/* Flips one bit through a char lvalue: abi.h reads the page as a header
 * struct and as words, and a char store aliases both. */
static void flip_bit(void *p, uint64_t bit)
{
	unsigned char *b = p;

	b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
}

/* A stray non-zero word in a page without a header is not "never written". */
static void test_unwritten_page_with_garbage(void **state)
{
	(void)state;
	for (uint64_t w = 1; w < WORDS; w++) {
		memset(page, 0, sizeof(page));
		flip_bit(page, w * 64 + w % 64);
		assert_false(lsg_page_valid(page, 0));
	}
}

/* Every single-bit flip in every word of a written page is caught. */
static void test_every_word_is_checked(void **state)
{
	(void)state;
	for (uint64_t w = 0; w < WORDS; w++) {
		lsg_page_fill(page, 99, 1000, 3);
		flip_bit(page, w * 64 + w * 7 % 64);
		assert_false(lsg_page_valid(page, 99));
	}
}

/* The cpu field's high bits are outside lsg_page_check; the cpu bound
 * catches them. */
static void test_cpu_field_high_bits(void **state)
{
	(void)state;
	for (uint64_t bit = 0; bit < 32; bit++) {
		lsg_page_fill(page, 99, 1000, 3);
		flip_bit(page, offsetof(struct lsg_page_hdr, cpu) * 8 + bit);
		assert_false(lsg_page_valid(page, 99));
	}
}

/* Half of generation g+1 over generation g: the torn page of `inflight`. */
static void test_torn_write_is_rejected(void **state)
{
	(void)state;
	lsg_page_fill(page, 5, 1, 0);
	lsg_page_fill(other, 5, 2, 0);
	for (uint64_t cut = 4; cut < WORDS; cut += 37) {
		memcpy(page, other, cut * 8);
		assert_false(lsg_page_valid(page, 5));
		lsg_page_fill(page, 5, 1, 0);
	}
	/* body of g+1 complete, header still g (the guest writes it last) */
	memcpy(page + 4, other + 4, (WORDS - 4) * 8);
	assert_false(lsg_page_valid(page, 5));
	memcpy(page, other, sizeof(page));
	assert_true(lsg_page_valid(page, 5));
}

/* Generation and writer are part of the content, not just labels. */
static void test_generation_and_cpu_matter(void **state)
{
	struct lsg_page_hdr *h = (struct lsg_page_hdr *)page;

	(void)state;
	lsg_page_fill(page, 8, 1, 0);
	lsg_page_fill(other, 8, 2, 0);
	assert_memory_not_equal(page + 4, other + 4, (WORDS - 4) * 8);
	lsg_page_fill(page, 8, 1, 0);
	h->cpu = 1; /* relabelled writer: check no longer matches */
	assert_false(lsg_page_valid(page, 8));
	lsg_page_fill(page, 8, 1, 0);
	h->generation = 2; /* relabelled generation */
	assert_false(lsg_page_valid(page, 8));
}

static void test_status_layout(void **state)
{
	(void)state;
	/* The host reads these at fixed places; keep them stable. */
	assert_int_equal(offsetof(struct lsg_status, magic), 0);
	assert_int_equal(offsetof(struct lsg_status, ready), 36);
	assert_int_equal(offsetof(struct lsg_vcpu_status, writes), 16);
	assert_int_equal(offsetof(struct lsg_vcpu_status, inflight), 64);
	assert_true(sizeof(struct lsg_vcpu_status) <= 0x10000);
	assert_true(LSG_VCPU_STATUS_OFF(LSG_MAX_CPUS) <= LSG_STATUS_SIZE);
	assert_true(sizeof(struct lsg_status) <= LSG_VCPU_STATUS_OFF(0));
	assert_int_equal(sizeof(struct lsg_timeline_entry), 16);
}

/* The host checkers' verdict: owner, generation and in-flight rules. */
static void test_page_verdict(void **state)
{
	struct lsg_vcpu_status owner;

	(void)state;
	memset(&owner, 0, sizeof(owner));
	owner.generation = 10;
	memset(page, 0, sizeof(page));
	assert_int_equal(lsg_page_verdict(page, 5, &owner, 1), LSG_PAGE_ZERO);
	lsg_page_fill(page, 5, 10, 1);
	assert_int_equal(lsg_page_verdict(page, 5, &owner, 1),
			 LSG_PAGE_WRITTEN);
	/* Written by another vCPU, or from the owner's future. */
	assert_int_equal(lsg_page_verdict(page, 5, &owner, 2), LSG_PAGE_BAD);
	lsg_page_fill(page, 5, 11, 1);
	assert_int_equal(lsg_page_verdict(page, 5, &owner, 1), LSG_PAGE_BAD);
	/* Half written while in flight: excused; elsewhere: bad. */
	page[WORDS - 1] ^= 1;
	assert_int_equal(lsg_page_verdict(page, 5, &owner, 1), LSG_PAGE_BAD);
	owner.inflight = 5 + 1;
	assert_int_equal(lsg_page_verdict(page, 5, &owner, 1),
			 LSG_PAGE_INFLIGHT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_answers),
	    cmocka_unit_test(test_fill_layout),
	    cmocka_unit_test(test_zero_page_is_valid),
	    cmocka_unit_test(test_filled_page_is_valid_for_its_index_only),
	    cmocka_unit_test(test_unwritten_page_with_garbage),
	    cmocka_unit_test(test_every_word_is_checked),
	    cmocka_unit_test(test_cpu_field_high_bits),
	    cmocka_unit_test(test_torn_write_is_rejected),
	    cmocka_unit_test(test_page_verdict),
	    cmocka_unit_test(test_generation_and_cpu_matter),
	    cmocka_unit_test(test_status_layout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
