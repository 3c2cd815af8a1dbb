/* SPDX-License-Identifier: MIT */
/*
 * Prints the userfaultfd features the library probes (ls_ctx_features()),
 * one `livesnap check` name a line, for test_check.py to compare with.
 */
#include <stdio.h>

#include "livesnap.h"

int main(void)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
	    {LS_FEAT_WP, "wp-anon"},
	    {LS_FEAT_WP_SHMEM_HUGETLB, "wp-shmem"},
	    {LS_FEAT_WP_SHMEM_HUGETLB, "wp-hugetlbfs"},
	    {LS_FEAT_WP_UNPOPULATED, "wp-unpopulated"},
	    {LS_FEAT_WP_ASYNC, "wp-async"},
	    {LS_FEAT_PAGEMAP_SCAN, "pagemap-scan"},
	    {LS_FEAT_MISSING_SHMEM, "missing-shmem"},
	    {LS_FEAT_MISSING_HUGETLB, "missing-hugetlbfs"},
	    {LS_FEAT_EVENT_REMOVE, "discard-events"},
	};
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;
	unsigned f;

	if (ls_ctx_create(&ctx, err, sizeof(err))) {
		fprintf(stderr, "features: %s\n", err);
		return 1;
	}
	f = ls_ctx_features(ctx);
	ls_ctx_destroy(ctx);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		printf("%s %s\n", names[i].name,
		       (f & names[i].bit) ? "yes" : "no");
	return 0;
}
