/* SPDX-License-Identifier: MIT */
/*
 * Regions: what kind of memory a range is (from /proc/self/smaps), and its
 * registration with the context's userfaultfd in write-protect mode.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "internal.h"

/* One mapping of /proc/self/smaps, as much as the engine needs. */
struct vma {
	uint64_t start, end;
	uint64_t pgoff; /* file offset of start */
	unsigned long long inode;
	char dev[16];
	char perms[5];
	char path[256];
	size_t page_size;
	bool hugetlb;
	bool thp; /* THPeligible: 1 */
};

/* The file behind a shmem region, when one file backs it contiguously. */
struct backing {
	bool one_file;
	uint64_t vma_start, vma_end; /* the first mapping */
	uint64_t file_off;           /* of the region's start */
	bool all_thp;                /* every mapping may use huge pages */
	bool shared;                 /* the first mapping is MAP_SHARED */
	bool anon_huge;              /* MAP_ANONYMOUS|MAP_HUGETLB, private */
	char dev[16];                /* the first mapping's file */
	unsigned long long inode;
};

static const char *const mem_type_names[] = {
	[LS_MEM_ANON] = "anonymous",
	[LS_MEM_SHMEM] = "shmem",
	[LS_MEM_HUGETLB] = "hugetlbfs",
};

/* Parses a mapping's header line; false if it is not one. */
static bool vma_parse_header(const char *line, struct vma *v)
{
	unsigned long long start, end, pgoff;
	int path_at = 0;

	memset(v, 0, sizeof(*v));
	if (sscanf(line, "%llx-%llx %4s %llx %15s %llu %n", &start, &end,
		   v->perms, &pgoff, v->dev, &v->inode, &path_at) < 6 ||
	    !path_at)
		return false;
	v->start = start;
	v->end = end;
	v->pgoff = pgoff;
	snprintf(v->path, sizeof(v->path), "%s", line + path_at);
	v->path[strcspn(v->path, "\n")] = '\0';
	v->page_size = LS_SMALL_PAGE;
	return true;
}

static void vma_parse_field(const char *line, struct vma *v)
{
	unsigned long kb;

	if (sscanf(line, "KernelPageSize: %lu kB", &kb) == 1)
		v->page_size = kb * 1024;
	else if (!strncmp(line, "VmFlags:", 8))
		v->hugetlb = strstr(line, " ht") != NULL;
	else if (!strncmp(line, "THPeligible:", 12))
		v->thp = strtoul(line + 12, NULL, 10) == 1;
}

/* A shared mapping: shmem (memfd, /dev/shm, SysV, MAP_SHARED|ANON)? */
static bool path_is_shmem(const char *path)
{
	char buf[256];
	struct statfs st;
	char *del;

	if (!path[0] || !strncmp(path, "/memfd:", 7) ||
	    !strncmp(path, "/dev/zero", 9) || !strncmp(path, "/SYSV", 5) ||
	    !strncmp(path, "[anon_shmem", 11))
		return true;
	if (path[0] != '/')
		return false;
	snprintf(buf, sizeof(buf), "%s", path);
	del = strstr(buf, " (deleted)");
	if (del)
		*del = '\0';
	return statfs(buf, &st) == 0 && st.f_type == TMPFS_MAGIC;
}

/* The memory type of a mapping, or -EINVAL with the reason in *why. */
static int vma_type(const struct vma *v, const char **why)
{
	bool shared = v->perms[3] == 's';

	if (v->hugetlb)
		return LS_MEM_HUGETLB;
	if (shared) {
		if (path_is_shmem(v->path))
			return LS_MEM_SHMEM;
		*why = "shared file mapping is not shmem: userfaultfd cannot "
		       "write-protect it";
		return -EINVAL;
	}
	if (!v->path[0] || v->path[0] == '[' || !strcmp(v->path, "/dev/zero"))
		return LS_MEM_ANON;
	*why = "private file mapping cannot be write-protected";
	return -EINVAL;
}

/*
 * Walks the mappings that cover [start, end): they must leave no gap and be
 * of one type and one page size, which go to *info.
 */
/* Follows which file (and where in it) the mappings of a range show. */
static void backing_track(struct backing *bk, const struct vma *prev,
			  const struct vma *cur, uint64_t start)
{
	bk->all_thp = (prev ? bk->all_thp : true) && cur->thp;
	if (!prev) {
		bk->one_file = cur->inode != 0;
		bk->shared = cur->perms[3] == 's';
		bk->anon_huge = !bk->shared && cur->hugetlb &&
				!strncmp(cur->path, "/anon_hugepage", 14);
		snprintf(bk->dev, sizeof(bk->dev), "%s", cur->dev);
		bk->inode = cur->inode;
		bk->vma_start = cur->start;
		bk->vma_end = cur->end;
		bk->file_off = cur->pgoff + (start - cur->start);
		return;
	}
	if (strcmp(prev->dev, cur->dev) || prev->inode != cur->inode ||
	    cur->pgoff != prev->pgoff + (cur->start - prev->start))
		bk->one_file = false;
	bk->anon_huge = bk->anon_huge && cur->perms[3] != 's' &&
			!strncmp(cur->path, "/anon_hugepage", 14);
}

static int classify_range(struct ls_ctx *ctx, const char *name,
			  struct ls_region_info *info, struct backing *bk)
{
	uint64_t start = (uint64_t)(uintptr_t)info->addr;
	uint64_t end = start + info->len, next = start;
	const char *why = NULL;
	struct vma v, cur = {0}, prev = {0};
	char *line = NULL;
	size_t cap = 0;
	bool have = false;
	int type = -1, ret = 0;
	FILE *f;

	f = fopen("/proc/self/smaps", "re");
	if (!f)
		return ls_err(ctx, errno, "region '%s': open /proc/self/smaps: %s",
			      name, strerror(errno));
	for (;;) {
		bool eof = getline(&line, &cap, f) < 0;

		if (eof || vma_parse_header(line, &v)) {
			/* The previous mapping is complete: judge it. */
			if (have && cur.end > next && cur.start < end) {
				int t;

				if (cur.start > next) {
					ret = ls_err(ctx, EFAULT,
						     "region '%s': nothing is mapped at 0x%" PRIx64,
						     name, next);
					break;
				}
				t = vma_type(&cur, &why);
				if (t < 0) {
					ret = ls_err(ctx, EINVAL,
						     "region '%s': mapping 0x%" PRIx64 "-0x%" PRIx64 " %s: %s",
						     name, cur.start, cur.end,
						     cur.path[0] ? cur.path : "(anonymous)",
						     why);
					break;
				}
				backing_track(bk, type < 0 ? NULL : &prev,
					      &cur, start);
				prev = cur;
				if (type < 0) {
					type = t;
					info->page_size = cur.page_size;
				} else if (t != type ||
					   cur.page_size != info->page_size) {
					ret = ls_err(ctx, EINVAL,
						     "region '%s': spans mappings of different types (%s with %zu-byte pages, then %s with %zu-byte pages at 0x%" PRIx64 ")",
						     name, mem_type_names[type],
						     info->page_size,
						     mem_type_names[t],
						     cur.page_size, cur.start);
					break;
				}
				next = cur.end;
			}
			if (eof || next >= end)
				break;
			cur = v;
			have = true;
		} else if (have) {
			vma_parse_field(line, &cur);
		}
	}
	free(line);
	fclose(f);
	if (!ret && next < end)
		ret = ls_err(ctx, EFAULT,
			     "region '%s': nothing is mapped at 0x%" PRIx64,
			     name, next);
	if (!ret)
		info->type = (enum ls_mem_type)type;
	return ret;
}

/*
 * Whether a read fault on untouched THP-eligible memory maps the huge zero
 * page (one PMD per 2 MiB, no memory) rather than 4 KiB zero pages.
 */
static bool huge_zero_page_enabled(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/use_zero_page",
			"re");
	int on = 0;

	if (!f)
		return false;
	if (fscanf(f, "%d", &on) != 1)
		on = 0;
	fclose(f);
	return on == 1;
}

static int check_new_region(struct ls_ctx *ctx, const char *name,
			    uint64_t start, uint64_t len)
{
	if (!name || !name[0] || strlen(name) >= LS_NAME_MAX)
		return ls_err(ctx, EINVAL,
			      "region name must be 1 to %d characters",
			      LS_NAME_MAX - 1);
	if (!len || (start | len) & (LS_SMALL_PAGE - 1) || start + len < start)
		return ls_err(ctx, EINVAL,
			      "region '%s': address 0x%" PRIx64 " and length %" PRIu64 " must be non-empty and page aligned",
			      name, start, len);
	if (ctx->snap || ls_ctx_restoring(ctx) >= 0)
		return ls_err(ctx, EBUSY,
			      "region '%s': cannot add regions while a snapshot exists or a lazy restore runs",
			      name);
	if (atomic_load(&ctx->track.on))
		return ls_err(ctx, EBUSY,
			      "region '%s': cannot add regions while writes are tracked (ls_track_stop first)",
			      name);
	if (ctx->nregions >= LS_MAX_REGIONS)
		return ls_err(ctx, ENOSPC, "region '%s': at most %d regions",
			      name, LS_MAX_REGIONS);
	for (int i = 0; i < ctx->nregions; i++) {
		const struct ls_region_info *o = &ctx->regions[i].info;
		uint64_t os = (uint64_t)(uintptr_t)o->addr;

		if (!strcmp(o->name, name))
			return ls_err(ctx, EEXIST,
				      "region '%s': the name is already registered",
				      name);
		if (start < os + o->len && os < start + len)
			return ls_err(ctx, EINVAL,
				      "region '%s': overlaps region '%s' (0x%" PRIx64 "-0x%" PRIx64 ")",
				      name, o->name, os, os + o->len);
	}
	return 0;
}

static const char *register_hint(const struct ls_ctx *ctx, int type)
{
	if (type != LS_MEM_ANON &&
	    !(ctx->features & LS_FEAT_WP_SHMEM_HUGETLB))
		return " (this kernel has no UFFD-WP for shmem/hugetlbfs)";
	return "";
}

/*
 * The shmem file behind a region, through /proc/self/map_files (root), so
 * that SEEK_DATA can tell holes: reading a hole of shmem would allocate it.
 * -1 if it cannot be opened (the writer then reads every page).
 */
static int open_backing(const struct backing *bk)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/map_files/%" PRIx64 "-%" PRIx64,
		 bk->vma_start, bk->vma_end);
	return open(path, O_RDONLY | O_CLOEXEC);
}

int ls_region_add(struct ls_ctx *ctx, const char *name, void *addr,
		  size_t len)
{
	uint64_t start = (uint64_t)(uintptr_t)addr, ioctls = 0;
	struct ls_region_info info = {0};
	struct backing bk = {0};
	struct ls_region *reg;
	int ret, idx;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	ret = check_new_region(ctx, name, start, len);
	if (ret)
		goto out;
	snprintf(info.name, sizeof(info.name), "%s", name);
	info.addr = addr;
	info.len = len;
	ret = classify_range(ctx, name, &info, &bk);
	if (ret)
		goto out;
	if ((start | len) & (info.page_size - 1)) {
		ret = ls_err(ctx, EINVAL,
			     "region '%s': address and length must be aligned to its %zu-byte pages",
			     name, info.page_size);
		goto out;
	}
	ret = ls_uffd_register(ctx->uffd, start, len, UFFDIO_REGISTER_MODE_WP,
			       &ioctls);
	if (ret) {
		ret = ls_err(ctx, ret,
			     "ioctl(UFFDIO_REGISTER) on region '%s' (%s): %s%s",
			     name, mem_type_names[info.type], strerror(-ret),
			     register_hint(ctx, info.type));
		goto out;
	}
	if (!(ioctls & (1ull << _UFFDIO_WRITEPROTECT))) {
		ls_uffd_unregister(ctx->uffd, start, len);
		ret = ls_err(ctx, ENOTSUP,
			     "region '%s' (%s): the kernel offers no UFFDIO_WRITEPROTECT for it%s",
			     name, mem_type_names[info.type],
			     register_hint(ctx, info.type));
		goto out;
	}
	pthread_rwlock_wrlock(&ctx->regions_rw); /* the fault thread looks */
	idx = ctx->nregions++;
	reg = &ctx->regions[idx];
	memset(reg, 0, sizeof(*reg));
	reg->info = info;
	reg->npages = len / info.page_size;
	reg->seek_fd = -1;
	reg->file_fd = -1;
	if (info.type != LS_MEM_ANON && bk.one_file && bk.shared)
		reg->file_fd = open_backing(&bk);
	if (info.type == LS_MEM_SHMEM)
		reg->seek_fd = reg->file_fd;
	reg->file_off = bk.file_off;
	reg->shared_file = info.type != LS_MEM_ANON && bk.one_file && bk.shared;
	reg->anon_huge = info.type == LS_MEM_HUGETLB && bk.anon_huge;
	snprintf(reg->dev, sizeof(reg->dev), "%s", bk.dev);
	reg->inode = bk.inode;
	reg->thp_zero = info.type == LS_MEM_ANON && bk.all_thp &&
			huge_zero_page_enabled();
	if (reg->thp_zero)
		reg->split = calloc(len / LS_HUGE_2M / 8 + 1, 1);
	reg->thp_zero = reg->split != NULL;
	pthread_rwlock_unlock(&ctx->regions_rw);
	ret = idx;
out:
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

int ls_region_remove(struct ls_ctx *ctx, int region)
{
	struct ls_region_info *info;
	int ret = 0;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (region < 0 || region >= ctx->nregions) {
		ret = ls_err(ctx, EINVAL, "region index %d does not exist",
			     region);
		goto out;
	}
	info = &ctx->regions[region].info;
	if (ctx->snap || ls_ctx_restoring(ctx) >= 0 ||
	    atomic_load(&ctx->track.on)) {
		ret = ls_err(ctx, EBUSY,
			     "region '%s': a snapshot exists, a lazy restore runs or writes are tracked in the context",
			     info->name);
		goto out;
	}
	ret = ls_uffd_unregister(ctx->uffd, (uint64_t)(uintptr_t)info->addr,
				 info->len);
	/* ENOMEM/EINVAL: the mapping is gone already; forget it anyway. */
	if (ret && ret != -ENOMEM && ret != -EINVAL) {
		ret = ls_err(ctx, ret,
			     "ioctl(UFFDIO_UNREGISTER) on region '%s': %s",
			     info->name, strerror(-ret));
		goto out;
	}
	ret = 0;
	if (ctx->regions[region].file_fd >= 0)
		close(ctx->regions[region].file_fd);
	free((void *)ctx->regions[region].split);
	pthread_rwlock_wrlock(&ctx->regions_rw);
	memmove(&ctx->regions[region], &ctx->regions[region + 1],
		(size_t)(ctx->nregions - region - 1) * sizeof(ctx->regions[0]));
	ctx->nregions--;
	pthread_rwlock_unlock(&ctx->regions_rw);
out:
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/*
 * Whether the part [s, e) of a mapping of the region's file at file offset
 * off (for s) maps any of the region's own file pages.
 */
static bool maps_region_pages(const struct ls_region *reg, uint64_t s,
			      uint64_t e, uint64_t off)
{
	return s < e && off < reg->file_off + reg->info.len &&
	       reg->file_off < off + (e - s);
}

/*
 * A writable shared mapping of the file behind a region, other than the
 * region itself, that maps some of the same pages: the line's parts before
 * and after the region's own range.
 */
static bool is_alias(const struct ls_region *reg, const struct vma *v)
{
	uint64_t rs = (uint64_t)(uintptr_t)reg->info.addr;
	uint64_t re = rs + reg->info.len;
	uint64_t cut1 = v->end < rs ? v->end : (v->start > rs ? v->start : rs);
	uint64_t cut2 = v->start > re ? v->start : (v->end < re ? v->end : re);

	if (!reg->shared_file || v->perms[1] != 'w' || v->perms[3] != 's' ||
	    v->inode != reg->inode || strcmp(v->dev, reg->dev))
		return false;
	return maps_region_pages(reg, v->start, cut1, v->pgoff) ||
	       maps_region_pages(reg, cut2, v->end,
				 v->pgoff + (cut2 - v->start));
}

/*
 * Writes through a second mapping of a region's pages (a VMM's device
 * backend, a second region of the same file) do not fault on the region's
 * mapping and escape write protection. Another process's mapping cannot be
 * seen from here (docs/api.md).
 */
int ls_regions_check_aliases(struct ls_ctx *ctx)
{
	char *line = NULL;
	size_t cap = 0;
	bool any = false;
	struct vma v;
	int ret = 0;
	FILE *f;

	for (int r = 0; r < ctx->nregions; r++)
		any |= ctx->regions[r].shared_file;
	if (!any)
		return 0;
	f = fopen("/proc/self/maps", "re");
	if (!f)
		return ls_err(ctx, errno, "open /proc/self/maps: %s",
			      strerror(errno));
	while (!ret && getline(&line, &cap, f) >= 0) {
		if (!vma_parse_header(line, &v))
			continue;
		for (int r = 0; r < ctx->nregions && !ret; r++)
			if (is_alias(&ctx->regions[r], &v))
				ret = ls_err(ctx, EBUSY,
					     "region '%s': its pages are also mapped writable at 0x%" PRIx64 "-0x%" PRIx64 " (%s): writes there would escape write protection; unmap that mapping or make it read-only while snapshots run",
					     ctx->regions[r].info.name, v.start,
					     v.end, v.path);
	}
	free(line);
	fclose(f);
	return ret;
}

int ls_ctx_restoring(const struct ls_ctx *ctx)
{
	for (int i = 0; i < ctx->nregions; i++)
		if (atomic_load(&ctx->regions[i].restore))
			return i;
	return -1;
}

int ls_region_count(const struct ls_ctx *ctx)
{
	return ctx ? ctx->nregions : 0;
}

int ls_region_get(const struct ls_ctx *ctx, int region,
		  struct ls_region_info *info)
{
	if (!ctx || !info || region < 0 || region >= ctx->nregions)
		return -EINVAL;
	*info = ctx->regions[region].info;
	return 0;
}
