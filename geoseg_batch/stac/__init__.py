"""STAC in and out: scenes found in a STAC API or static catalog (their Items' assets read as one stacked scene),
and results described as STAC Items in a static collection beside the outputs (and posted to a STAC API)."""
