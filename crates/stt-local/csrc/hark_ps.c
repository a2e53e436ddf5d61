/* See hark_ps.h. */
#include "hark_ps.h"

#include <sphinxbase/feat.h>

cmn_t *
hark_ps_live_cmn(ps_decoder_t *ps)
{
    feat_t *feat = ps_get_feat(ps);
    return feat ? feat->cmn_struct : NULL;
}

int32
hark_cmn_veclen(cmn_t *cmn)
{
    return cmn->veclen;
}
