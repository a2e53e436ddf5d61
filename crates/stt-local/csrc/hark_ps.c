/* See hark_ps.h. */
#include "hark_ps.h"

#include <string.h>
#include <sphinxbase/feat.h>

cmn_t *
hark_ps_live_cmn(ps_decoder_t *ps)
{
    feat_t *feat = ps_get_feat(ps);
    return feat ? feat->cmn_struct : NULL;
}

int32
hark_cmn_veclen(cmn_t const *cmn)
{
    return cmn->veclen;
}

void
hark_cmn_save(cmn_t const *cmn, mfcc_t *mean)
{
    memcpy(mean, cmn->cmn_mean, cmn->veclen * sizeof(*mean));
}

void
hark_cmn_restart(cmn_t *cmn, mfcc_t const *mean)
{
    /* acmod sets the mean from -cmninit on a calloc'd cmn_t: sum 0, nframe 0. */
    memcpy(cmn->cmn_mean, mean, cmn->veclen * sizeof(*mean));
    memset(cmn->sum, 0, cmn->veclen * sizeof(*cmn->sum));
    cmn->nframe = 0;
}
