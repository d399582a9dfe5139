"""Where a caller is: US state from the area code or from a ZIP code keyed in.

Both tables ship with the project (nothing is downloaded at run time):
- area code (NPA) -> state, derived once from the phonenumbers geocoding data
  (geographic NANP area codes; toll-free and non-geographic codes have none);
- ZIP3 prefix -> state, the USPS sectional-centre ranges (public knowledge;
  military APO/FPO prefixes are left out: they are no state).
"""

from __future__ import annotations

import re

_NPA_BY_STATE = {
    "AK": "907",
    "AL": "205 251 256 334 659 938",
    "AR": "327 479 501 870",
    "AZ": "480 520 602 623 928",
    "CA": "209 213 279 310 323 341 350 369 408 415 424 442 510 530 559 562 619 626 628 650 657 661 669 707 714 738 747 760 805 818 820 831 840 858 909 916 925 949 951",
    "CO": "303 719 720 748 970 983",
    "CT": "203 475 860 959",
    "DC": "202 771",
    "DE": "302",
    "FL": "239 305 321 324 352 386 407 448 561 645 656 689 727 728 754 772 786 813 850 863 904 941 954",
    "GA": "229 404 470 478 678 706 762 770 912 943",
    "HI": "808",
    "IA": "319 515 563 641 712",
    "ID": "208 986",
    "IL": "217 224 309 312 331 447 464 618 630 708 730 773 779 815 847 872",
    "IN": "219 260 317 463 574 765 812 930",
    "KS": "316 620 785 913",
    "KY": "270 364 502 606 859",
    "LA": "225 318 337 504 985",
    "MA": "339 351 413 508 617 774 781 857 978",
    "MD": "227 240 301 410 443 667",
    "ME": "207",
    "MI": "231 248 269 313 517 586 616 734 810 906 947 989",
    "MN": "218 320 507 612 651 763 952",
    "MO": "235 314 417 557 573 636 660 816 975",
    "MS": "228 601 662 769",
    "MT": "406",
    "NC": "252 336 472 704 743 828 910 919 980 984",
    "ND": "701",
    "NE": "308 402 531",
    "NH": "603",
    "NJ": "201 551 609 640 732 848 856 862 908 973",
    "NM": "505 575",
    "NV": "702 725 775",
    "NY": "212 315 329 332 347 363 516 518 585 607 631 646 680 716 718 838 845 914 917 929 934",
    "OH": "216 220 234 283 326 330 380 419 440 513 567 614 740 937",
    "OK": "405 539 572 580 918",
    "OR": "458 503 541 971",
    "PA": "215 223 267 272 412 445 484 570 582 610 717 724 814 835 878",
    "PR": "787 939",
    "RI": "401",
    "SC": "803 821 839 843 854 864",
    "SD": "605",
    "TN": "423 615 629 731 865 901 931",
    "TX": "210 214 254 281 325 346 361 409 430 432 469 512 682 713 726 737 806 817 830 832 903 915 936 940 945 956 972 979",
    "UT": "385 435 801",
    "VA": "276 434 540 571 686 703 757 804 826 948",
    "VT": "802",
    "WA": "206 253 360 425 509",
    "WI": "262 274 353 414 534 608 715 920",
    "WV": "304 681",
    "WY": "307",
}

_ZIP3_RANGES = """005 NY; 006-009 PR; 010-027 MA; 028-029 RI; 030-038 NH; 039-049 ME; 050-054 VT; 055 MA; 056-059 VT;
060-069 CT; 070-089 NJ; 100-149 NY; 150-196 PA; 197-199 DE; 200 DC; 201 VA; 202-205 DC; 206-219 MD;
220-246 VA; 247-268 WV; 270-289 NC; 290-299 SC; 300-319 GA; 320-339 FL; 341-349 FL; 350-369 AL;
370-385 TN; 386-397 MS; 398-399 GA; 400-427 KY; 430-459 OH; 460-479 IN; 480-499 MI; 500-528 IA;
530-549 WI; 550-567 MN; 569 DC; 570-577 SD; 580-588 ND; 590-599 MT; 600-629 IL; 630-658 MO;
660-679 KS; 680-693 NE; 700-715 LA; 716-729 AR; 730-732 OK; 733 TX; 734-749 OK; 750-799 TX;
800-816 CO; 820-831 WY; 832-838 ID; 840-847 UT; 850-865 AZ; 870-884 NM; 885 TX; 889-898 NV;
900-961 CA; 967-968 HI; 970-979 OR; 980-994 WA; 995-999 AK"""

AREA_CODE_STATE: dict[str, str] = {npa: st for st, npas in _NPA_BY_STATE.items() for npa in npas.split()}


def _zip3_table() -> dict[str, str]:
    out = {}
    for item in _ZIP3_RANGES.replace("\n", " ").split(";"):
        span, state = item.split()
        lo, _, hi = span.partition("-")
        for n in range(int(lo), int(hi or lo) + 1):
            out[f"{n:03d}"] = state
    return out


ZIP3_STATE: dict[str, str] = _zip3_table()
STATES = frozenset(AREA_CODE_STATE.values()) | frozenset(ZIP3_STATE.values())
_ZIP = re.compile(r"^[0-9]{5}$")


def area_code(e164: str) -> str:
    """The NANP area code of a +1 number ('' for anything else)."""
    return e164[2:5] if len(e164) == 12 and e164.startswith("+1") and e164[1:].isdigit() else ""


def state_of_area_code(npa: str) -> str:
    return AREA_CODE_STATE.get(npa, "")


def valid_zip(value: str) -> bool:
    return bool(_ZIP.match(value or ""))


def state_of_zip(zip_code: str) -> str:
    """The state of a 5-digit ZIP code ('' when unknown or not 5 digits)."""
    return ZIP3_STATE.get(zip_code[:3], "") if valid_zip(zip_code) else ""
