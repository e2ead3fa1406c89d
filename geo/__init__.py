"""geo: need by area, rates with confidence intervals, and maps.

* :mod:`geo.reference` — vendored LSOA 2011 boundaries, IMD 2019, ESP 2013, the attribution;
* :mod:`geo.rates` — crude rates (Byar / exact Poisson limits), DSRs (Dobson), Wilson;
* :mod:`geo.need` — ``geo.need_by_*`` tables (raw and published) and per-PCN GeoPackages;
* :mod:`geo.maps` — static PNG choropleths (``geo.maps.static``), the offline HTML map
  (``geo.maps.interactive``), the community-asset gaps (``geo.maps.gaps``).

Methods and outputs: ``docs/geography.md``.
"""
